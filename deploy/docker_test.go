package deploy_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// No Docker engine runs on the test machines (only the client is
// installed), so the image itself is not built here. What can be checked
// without one is: the Dockerfile's build command, its instructions, and
// the binary that command makes, run as the image would run it.

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur += strings.TrimSpace(l) + " "
			continue
		}
		out = append(out, strings.TrimSpace(cur+line))
		cur = ""
	}
	return out
}

// TestDockerfile: a multi-stage build whose build command is the one
// TestMain ran (static, CGO_ENABLED=0), and a final stage that runs as a
// non-root user, keeps its data on a /data volume, and checks its health
// with the binary itself.
func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms, final []string
	for _, in := range ins {
		if strings.HasPrefix(in, "FROM ") {
			froms = append(froms, in)
			final = nil
		}
		final = append(final, in)
	}
	if len(froms) < 2 {
		t.Fatalf("not a multi-stage build: %q", froms)
	}
	if !slices.Contains(ins, "RUN "+dockerBuild) {
		t.Errorf("the Dockerfile does not RUN %q, the build this test checks", dockerBuild)
	}
	find := func(kw string) string {
		for _, in := range final {
			if strings.HasPrefix(in, kw+" ") {
				return strings.TrimPrefix(in, kw+" ")
			}
		}
		t.Errorf("the final stage has no %s", kw)
		return ""
	}
	if u := find("USER"); u == "" || u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
		t.Errorf("USER %q: want a non-root user", u)
	}
	if v := find("VOLUME"); !strings.Contains(v, `"/data"`) && v != "/data" {
		t.Errorf("VOLUME %s: want /data", v)
	}
	hc := find("HEALTHCHECK")
	if !strings.Contains(hc, `CMD ["/usr/local/bin/linegate", "health"`) {
		t.Errorf("HEALTHCHECK %s: want the binary's own probe (no curl in a distroless image)", hc)
	}
	if e := find("ENTRYPOINT"); e != `["/usr/local/bin/linegate"]` {
		t.Errorf("ENTRYPOINT %s", e)
	}
	if c := find("COPY"); !strings.Contains(c, "/usr/local/bin/linegate") {
		t.Errorf("the final stage's first COPY is %q, want the binary at /usr/local/bin/linegate", c)
	}
}

// TestStaticBinary: the Dockerfile's build makes a binary with no
// program interpreter and no shared libraries, so that it runs on a
// distroless or scratch base.
func TestStaticBinary(t *testing.T) {
	f, err := elf.Open(linegateBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: not static", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %q (%v)", libs, err)
	}
	if _, err := exec.LookPath("file"); err == nil {
		out, err := exec.Command("file", linegateBin).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "statically linked") {
			t.Errorf("file: %s", out)
		}
	}
}

// TestContainerRun: the static binary serves with the deployment config
// as the container runs it (data in /data, the webhook listener on all
// addresses), and the Dockerfile's HEALTHCHECK command passes against it,
// and fails once it is gone.
func TestContainerRun(t *testing.T) {
	dir := t.TempDir()
	cfg := installConfig(t, dir, func(c string) string {
		// What the Dockerfile's comment asks of the config.
		return replaceAll(t, c, "\nlisten: 127.0.0.1:0", "\nlisten: 0.0.0.0:0")
	})
	g := startGateway(t, dir, cfg)
	var hc []string
	for _, in := range dockerfile(t) {
		if s, ok := strings.CutPrefix(in, "HEALTHCHECK "); ok {
			_, cmd, _ := strings.Cut(s, "CMD ")
			hc = jsonArray(t, cmd)
		}
	}
	if len(hc) < 2 {
		t.Fatalf("HEALTHCHECK command %q", hc)
	}
	args := slices.Clone(hc[1:])
	for i, a := range args {
		// The image's admin listener is 127.0.0.1:8081; here, a free port.
		args[i] = strings.Replace(a, "127.0.0.1:8081", g.admin, 1)
	}
	if out, err := exec.Command(linegateBin, args...).CombinedOutput(); err != nil {
		t.Errorf("HEALTHCHECK %q against a running gateway: %v\n%s", args, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "ledger.db")); err != nil {
		t.Errorf("no ledger in the data directory: %v", err)
	}
	g.stop()
	if out, err := exec.Command(linegateBin, args...).CombinedOutput(); err == nil {
		t.Errorf("HEALTHCHECK passes with the gateway stopped:\n%s", out)
	}
}

// jsonArray parses an exec-form instruction argument (["a", "b"]).
func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		t.Fatalf("not an exec-form array: %s", s)
	}
	var out []string
	for f := range strings.SplitSeq(s[1:len(s)-1], ",") {
		out = append(out, strings.Trim(strings.TrimSpace(f), `"`))
	}
	return out
}
