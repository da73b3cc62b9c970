package console

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
)

// auditData is the auditor's page's.
type auditData struct {
	Verify     *verifyRun
	Running    bool
	Head       ledger.TreeHead
	Anchors    []Anchor
	AnchorsErr string
	Holds      []retention.Hold
	HoldsErr   string
	Requests   []Request
	RequestErr string
	Today      string
	Channels   []string
	CanVerify  bool
	CanExport  bool
}

func (c *Console) audit(w http.ResponseWriter, r *http.Request, s *session) {
	d := &auditData{Head: c.o.Ledger.Head(), Today: c.o.Now().UTC().Format("2006-01-02"), Channels: c.o.Channels,
		CanVerify: c.o.Verify != nil, CanExport: c.o.Export != nil}
	c.verifyMu.Lock()
	if c.lastVerify != nil {
		v := *c.lastVerify
		d.Verify = &v
	}
	d.Running = c.verifying
	c.verifyMu.Unlock()
	if c.o.Anchors != nil {
		var err error
		if d.Anchors, err = c.o.Anchors(); err != nil {
			d.AnchorsErr = err.Error()
		}
	}
	if c.o.Holds != nil {
		var err error
		if d.Holds, err = c.o.Holds(r.Context()); err != nil {
			c.log.Error("console: holds", "err", err)
			d.HoldsErr = "The store is unavailable."
		}
	}
	if c.o.Requests != nil {
		var err error
		if d.Requests, err = c.o.Requests(r.Context()); err != nil {
			c.log.Error("console: deletion requests", "err", err)
			d.RequestErr = "The store is unavailable."
		}
	}
	p := sessionPage(r, s, "Audit", d)
	if d.Running {
		p.Refresh = 1
	}
	c.render(w, r, http.StatusOK, "audit", p)
}

// runVerify starts a verification of the ledger, recorded with who asked,
// unless one runs; its outcome is recorded too, and shown on the page.
func (c *Console) runVerify(w http.ResponseWriter, r *http.Request, s *session) {
	if c.o.Verify == nil {
		c.errorPage(w, r, s, http.StatusNotFound, "Verification is not available here.")
		return
	}
	c.verifyMu.Lock()
	if c.verifying {
		c.verifyMu.Unlock()
		redirect(w, r, "/console/audit", "verify_started")
		return
	}
	c.verifying = true
	c.verifyMu.Unlock()
	if err := c.record(r.Context(), r, s, "console_verify", map[string]any{}); err != nil {
		c.verifyMu.Lock()
		c.verifying = false
		c.verifyMu.Unlock()
		c.failAction(w, r, s, "console_verify", err)
		return
	}
	run := &verifyRun{By: s.user.Name, Started: c.o.Now()}
	detail := c.who(r, s, map[string]any{})
	c.o.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		res, err := c.o.Verify(ctx)
		run.Took, run.Result, run.Finished = c.o.Now().Sub(run.Started), res, true
		if err != nil {
			c.log.Error("console: verify could not run", "err", err)
			run.Err = "verify could not run: " + err.Error()
		}
		detail["ok"], detail["records"], detail["summary"] = res.OK && err == nil, res.Records, res.Summary
		if err != nil {
			detail["summary"] = run.Err
		}
		if _, rerr := outbound.RecordAdmin(ctx, c.o.Ledger, "console_verify_result", detail, nil, c.o.Now()); rerr != nil {
			c.log.Error("console: the verify result was not recorded", "err", rerr)
		}
		c.verifyMu.Lock()
		c.lastVerify, c.verifying = run, false
		c.verifyMu.Unlock()
	})
	redirect(w, r, "/console/audit", "verify_started")
}

// bundle exports an evidence bundle of a user and a period, records who
// took it, and sends it as a zip file. The bundle is written to a private
// temporary directory and removed once sent.
func (c *Console) bundle(w http.ResponseWriter, r *http.Request, s *session) {
	if c.o.Export == nil {
		c.errorPage(w, r, s, http.StatusNotFound, "Evidence bundles are not available here.")
		return
	}
	sel, err := bundleSelection(r.PostFormValue("user"), r.PostFormValue("from"), r.PostFormValue("to"), r.PostFormValue("channel"), c.o.Channels)
	if err != nil {
		c.errorPage(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	done, ok := c.startBundle(w, r, s)
	if !ok {
		return
	}
	defer done()
	// A large bundle takes longer than the admin listener's write timeout.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Minute))
	tmp, err := os.MkdirTemp(c.o.TempDir, "console-bundle-")
	if err != nil {
		c.failAction(w, r, s, "console_bundle", err)
		return
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o700); err != nil {
		c.failAction(w, r, s, "console_bundle", err)
		return
	}
	dir := filepath.Join(tmp, "bundle")
	m, err := c.o.Export(r.Context(), sel, dir)
	if err != nil {
		c.failAction(w, r, s, "console_bundle", err)
		return
	}
	// Recorded before a byte leaves: the record is sealed under the
	// user's key, like the request it answers.
	detail := c.who(r, s, map[string]any{"user": sel.User, "from": sel.From.Format(time.DateOnly), "to": sel.To.Format(time.DateOnly),
		"channel": sel.Channel, "records": len(m.Records), "tree_size": m.TreeSize})
	if _, err := outbound.RecordAdmin(r.Context(), c.o.Ledger, "console_bundle", detail, []string{sel.User}, c.o.Now()); err != nil {
		c.failAction(w, r, s, "console_bundle", err)
		return
	}
	name := fmt.Sprintf("evidence-%s-%s.zip", sel.From.Format("20060102"), sel.To.Format("20060102"))
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if err := zipDir(w, dir); err != nil {
		c.log.Error("console: bundle: sending failed", "err", err)
	}
}

// bundleSelection reads the bundle form: a LINE user id, a period of
// whole days (UTC: from's midnight to the midnight after to), and a
// channel or all.
func bundleSelection(user, from, to, channel string, channels []string) (evidence.Selection, error) {
	var sel evidence.Selection
	subj, ok := line.ParseSubject(strings.Trim(user, " "))
	if !ok || strings.ContainsFunc(user, unicode.IsControl) || !strings.HasPrefix(subj, "user:") || !line.ValidSubject(subj) {
		return sel, fmt.Errorf("User: want a LINE user id (U and 32 hexadecimal digits).")
	}
	f, err1 := time.Parse(time.DateOnly, from)
	t, err2 := time.Parse(time.DateOnly, to)
	if err1 != nil || err2 != nil {
		return sel, fmt.Errorf("From and To: want dates such as 2026-11-26.")
	}
	t = t.AddDate(0, 0, 1)
	if !f.Before(t) {
		return sel, fmt.Errorf("From must not be after To.")
	}
	if channel != "" && !contains(channels, channel) {
		return sel, fmt.Errorf("Channel: not one of the config's channels.")
	}
	return evidence.Selection{From: f, To: t, User: subj, Channel: channel}, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// zipDir writes the files under dir to w as a zip archive, under the
// folder name "bundle".
func zipDir(w io.Writer, dir string) error {
	zw := zip.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		zf, err := zw.Create("bundle/" + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = io.Copy(zf, f)
		return err
	})
	if err != nil {
		return err
	}
	return zw.Close()
}

// failAction answers an action that failed: neither applied nor
// recorded. The error is logged, not shown (it may name internals).
func (c *Console) failAction(w http.ResponseWriter, r *http.Request, s *session, action string, err error) {
	if r.Context().Err() != nil {
		return
	}
	c.log.Error("console: action failed", "action", action, "user", s.user.Name, "err", err)
	c.errorPage(w, r, s, http.StatusServiceUnavailable, "The ledger or the store is unavailable: nothing was done. Try again in a moment.")
}
