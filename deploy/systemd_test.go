package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const unitFile = "systemd/linegate.service"

// unit parses a systemd unit file: section -> key -> values, in order
// (a key may be given more than once).
func unit(t *testing.T) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	section := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a key=value line in a section: %q", unitFile, line)
			}
			k = strings.TrimSpace(k)
			out[section][k] = append(out[section][k], strings.TrimSpace(v))
		}
	}
	return out
}

// TestSystemdUnit: the unit runs serve with the deployment config, as a
// dedicated user, with the hardening the deployment guide promises.
func TestSystemdUnit(t *testing.T) {
	svc := unit(t)["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	want := map[string]string{
		"ExecStart":               "/usr/local/bin/linegate serve -config /etc/linegate/linegate.yaml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"User":                    "linegate",
		"StateDirectory":          "linegate",
		"StateDirectoryMode":      "0700",
		"ReadWritePaths":          "/var/lib/linegate",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"SystemCallArchitectures": "native",
		"MemoryDenyWriteExecute":  "yes",
		"RestrictSUIDSGID":        "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"UMask":                   "0077",
	}
	for k, v := range want {
		got, ok := svc[k]
		if !ok {
			t.Errorf("[Service] has no %s (want %s=%s)", k, k, v)
			continue
		}
		if got[len(got)-1] != v {
			t.Errorf("%s=%s, want %s", k, got[len(got)-1], v)
		}
	}
	if f := svc["SystemCallFilter"]; !slices.Contains(f, "@system-service") {
		t.Errorf("SystemCallFilter=%q: want @system-service", f)
	}
	// The data directory the unit gives is the deployment config's.
	cfg, err := os.ReadFile("linegate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\ndata_dir: /var/lib/linegate\n") {
		t.Errorf("deploy/linegate.yaml's data_dir is not /var/lib/linegate, the unit's StateDirectory")
	}
}

// TestSystemdAnalyze: systemd's own checks of the unit, with ExecStart
// pointing at the binary the Dockerfile's command built (verify wants it
// to exist): `systemd-analyze verify` finds no error, and `systemd-analyze
// security` rates its exposure 2.0 or lower ("OK").
func TestSystemdAnalyze(t *testing.T) {
	sa := need(t, "systemd-analyze")
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u := replaceAll(t, string(b), "ExecStart=/usr/local/bin/linegate ", "ExecStart="+linegateBin+" ")
	f := filepath.Join(t.TempDir(), "linegate.service")
	if err := os.WriteFile(f, []byte(u), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", f).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", f).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
	}
	if i := strings.Index(string(out), "Overall exposure level"); i >= 0 {
		t.Logf("%s", strings.TrimSpace(string(out[i:])))
	}
}
