package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linegate/linegate/internal/witness/witnesstest"
)

// TestWitnessQuorumCoversRecords: a cosignature of an older prefix of the
// tree does not vouch for the records after it. The witness cosigns the
// first records; a backup of that time is restored after the witness
// cosigned more, and other records are added: the witness refuses the
// fork, and the restored cosigned checkpoint is a prefix of the forked
// tree. verify-bundle -witness-quorum fails on a bundle holding the
// forked records, export says so, and verify -witness-quorum fails once
// they are older than -witness-max-lag.
func TestWitnessQuorumCoversRecords(t *testing.T) {
	if pgE2E {
		t.Skip("restores the SQLite database's files")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	vkey, err := generateKey(filepath.Join(dir, "data", "log.key"), testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	wit := witnesstest.Start(t, "example.com/witness-1", testOrigin, vkey)
	g := startGateway(t, dir, gwConfig{public: true, extra: archiveConfig(t, nil, "", wit)})
	for i := range 20 {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 20)
	cosFile := cosignedFile(filepath.Join(dir, "data", "published"))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if b, err := os.ReadFile(cosFile); err == nil && fileSize(t, cosFile) >= 20 && strings.Contains(string(b), "example.com/witness-1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the witness did not cosign")
		}
	}
	g.stop()
	cosSize := fileSize(t, cosFile)
	cfgWitnessed := g.cfgPath

	// All records cosigned: both pass.
	covered := filepath.Join(t.TempDir(), "covered")
	if code, out := runCLI(t, "export", "-config", cfgWitnessed, "-out", covered); code != 0 || strings.Contains(out, "not yet covered") {
		t.Fatalf("export = %d:\n%s", code, out)
	}
	if code, out := runCLI(t, "verify-bundle", "-witness-quorum", "1", "-witness-key", wit.VKey, covered); code != 0 {
		t.Fatalf("verify-bundle of cosigned records = %d:\n%s", code, out)
	}

	// A backup, ten more records the witness cosigns, then the backup
	// restored whole (its cosigned checkpoint file too) and ten other
	// records: the witness refuses the fork, and the cosigned file, an
	// honest prefix, stays.
	backup := t.TempDir()
	copyDir(t, filepath.Join(dir, "data"), backup)
	g = startGateway(t, dir, gwConfig{public: true, extra: archiveConfig(t, nil, "", wit)})
	for i := 20; i < 30; i++ {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"n":%d}`, i))
	}
	g.waitTreeSize(t, 30)
	for deadline := time.Now().Add(20 * time.Second); fileSize(t, cosFile) < 30; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the witness did not cosign size 30")
		}
	}
	g.stop()
	os.RemoveAll(filepath.Join(dir, "data"))
	copyDir(t, backup, filepath.Join(dir, "data"))
	g = startGateway(t, dir, gwConfig{public: true, extra: archiveConfig(t, nil, "", wit)})
	for i := 20; i < 30; i++ {
		g.post(t, testSecret, fmt.Appendf(nil, `{"events":[],"forked":%d}`, i))
	}
	g.waitTreeSize(t, 30)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, m := g.get(t, g.admin+"/metrics")
		if strings.Contains(string(m), `linegate_witness_forked{witness="example.com/witness-1"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the witness did not refuse the fork")
		}
	}
	g.stop()
	if fileSize(t, cosFile) != cosSize {
		t.Fatal("the cosigned checkpoint changed on a forked log")
	}

	bundle := filepath.Join(t.TempDir(), "bundle")
	code, out := runCLI(t, "export", "-config", cfgWitnessed, "-out", bundle)
	if code != 0 || !strings.Contains(out, "not yet covered by the cosigned checkpoint") {
		t.Fatalf("export of records beyond the cosigned checkpoint = %d, does not say so:\n%s", code, out)
	}
	code, out = runCLI(t, "verify-bundle", "-witness-quorum", "1", "-witness-key", wit.VKey, bundle)
	if code != 1 || !strings.Contains(out, "lie beyond the cosigned checkpoint") {
		t.Fatalf("verify-bundle -witness-quorum 1 of records beyond the cosigned checkpoint = %d:\n%s", code, out)
	}
	// Without the quorum, the records themselves still verify.
	if code, out := runCLI(t, "verify-bundle", bundle); code != 0 {
		t.Fatalf("verify-bundle without a quorum = %d:\n%s", code, out)
	}

	// verify: within the default bound (10m) the uncovered records are
	// the next round's; past -witness-max-lag they fail it.
	wk := []string{"-witness-quorum", "1", "-witness-key", wit.VKey}
	if code, out := runCLI(t, append([]string{"verify", "-config", cfgWitnessed}, wk...)...); code != 0 {
		t.Fatalf("verify -witness-quorum 1 within the default lag = %d:\n%s", code, out)
	}
	time.Sleep(1100 * time.Millisecond)
	code, out = runCLI(t, append([]string{"verify", "-config", cfgWitnessed, "-witness-max-lag", "1s"}, wk...)...)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("FAIL witnesses: record %d and later are not covered", cosSize)) {
		t.Fatalf("verify -witness-max-lag 1s with records uncovered for longer = %d:\n%s", code, out)
	}
}
