package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/linegate/linegate/internal/console"
	"github.com/linegate/linegate/internal/evidence"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

// newConsole builds the web console when the config has one: its users,
// and the gateway's parts it shows and acts on. It must run after
// newAdmin (it reloads rules through the admin API, and registers its
// metrics beside the others).
func (g *instance) newConsole(e *env) error {
	cc := g.cfg.Console
	if cc == nil {
		return nil
	}
	cfg := g.cfg
	// Bundles are written here before they are sent, then removed: under
	// the private data directory, emptied at each start.
	tmp := filepath.Join(cfg.DataDir, "console-tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	origin, _ := cc.origin() // checked by parseConfig
	proxies, _ := console.ParseTrustedProxies(cc.TrustedProxies)
	c, err := console.New(console.Options{
		Users: cc.users(), Channels: channelIDs(cfg),
		SecureCookie: cc.SecureCookie, Origin: origin, IdleTimeout: cc.IdleTimeout, MaxAge: cc.MaxAge,
		LoginFailures: cc.LoginFailures, LoginWindow: cc.LoginWindow, TrustedProxies: proxies,
		Ledger: g.led, Switches: g.sender, Conversations: g.conversations(),
		RulesHash: func() string { return g.engine.Rules().Hash },
		Reload: func(ctx context.Context, trigger string) (string, int, error) {
			set, err := g.api.Reload(ctx, trigger)
			if err != nil {
				return "", 0, err
			}
			return set.Hash, len(set.Rules), nil
		},
		Verify:   func(ctx context.Context) (console.VerifyResult, error) { return g.verifyNow(ctx, e) },
		Anchors:  g.anchors,
		Holds:    g.store.Holds,
		Requests: g.subjectRequests,
		Export:   g.export,
		TempDir:  tmp, BundleMinFree: cc.BundleMinFreeMB << 20,
		Metrics: g.reg,
		Go:      g.consoleWork(),
		Logger:  g.log,
	})
	if err != nil {
		return fmt.Errorf("config: console: %w", err)
	}
	g.reg.MustRegister(c.Collectors()...)
	g.console = c
	return nil
}

// consoleWork returns how the console runs background work (a
// verification): with the gateway's background jobs, which wait for it
// when they stop; once they are stopping, work is not started.
func (g *instance) consoleWork() func(func(context.Context)) {
	var mu sync.Mutex
	var work sync.WaitGroup
	closed := false
	ctx := g.bgCtx
	g.bg.Go(func() {
		<-ctx.Done()
		mu.Lock()
		closed = true
		mu.Unlock()
		work.Wait()
	})
	return func(f func(context.Context)) {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			work.Go(func() { f(ctx) })
		}
	}
}

// conversations is the handoff engine the console's inbox works with.
func (g *instance) conversations() console.Conversations {
	if g.handoff == nil {
		return nil // the inbox says handoff is not running
	}
	return g.handoff
}

// adminHandler is the admin listener's handler: the admin API, and the
// console under /console/ when there is one.
func (g *instance) adminHandler() http.Handler {
	api := g.api.Handler()
	if g.console == nil {
		return api
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", g.console.Handler())
	mux.Handle("/", api)
	return mux
}

// verifyNow verifies the ledger as linegate verify -config does, from a
// snapshot of the store the gateway writes: against the published
// checkpoint file and the anchors (read first: they never get ahead of
// the database), opening payloads with the config's keys, checking
// deletions against the config's retention classes.
func (g *instance) verifyNow(ctx context.Context, e *env) (console.VerifyResult, error) {
	cfg := g.cfg
	var external []ledger.External
	published, err := os.ReadFile(filepath.Join(cfg.Log.PublishDir, "checkpoint"))
	switch {
	case err == nil:
		external = append(external, ledger.External{Name: "published checkpoint file", Signed: published})
	case !errors.Is(err, fs.ErrNotExist):
		return console.VerifyResult{}, err
	}
	anchors, err := ledger.ReadAnchors(cfg.Log.AnchorsDir, g.verifier, cfg.Log.Origin)
	if err != nil {
		return failedVerify(err)
	}
	for _, a := range anchors {
		external = append(external, ledger.External{Name: "anchor " + a.Name(), Signed: a.Signed()})
	}
	view, err := g.store.Snapshot(ctx)
	if err != nil {
		return console.VerifyResult{}, err
	}
	defer view.Close()
	sealer, err := verifySealer(ctx, e, cfg, cfg.DataDir, "", view)
	if err != nil {
		return console.VerifyResult{}, err
	}
	start := time.Now()
	rep, err := ledger.Verify(ctx, view, g.verifier, cfg.Log.Origin, external, sealer, ledger.WithDeletionPolicy(retention.Policies(cfg.policies())))
	if err != nil {
		return failedVerify(err)
	}
	summary, notes := verifyReport(rep, len(anchors), sealer != nil, time.Since(start))
	return console.VerifyResult{OK: true, Records: rep.Records, TreeSize: rep.TreeSize, Summary: summary, Notes: notes}, nil
}

// failedVerify is the result of a verification that found something (a
// *ledger.VerifyError), or the error of one that could not run.
func failedVerify(err error) (console.VerifyResult, error) {
	var ve *ledger.VerifyError
	if errors.As(err, &ve) {
		return console.VerifyResult{Summary: fmt.Sprintf("FAIL %s: %s", ve.Where, ve.Reason)}, nil
	}
	return console.VerifyResult{}, err
}

// anchors lists the anchors written so far, checked.
func (g *instance) anchors() ([]console.Anchor, error) {
	as, err := ledger.ReadAnchors(g.cfg.Log.AnchorsDir, g.verifier, g.cfg.Log.Origin)
	if err != nil {
		return nil, err
	}
	out := make([]console.Anchor, len(as))
	for i, a := range as {
		out[i] = console.Anchor{Name: a.Name(), Size: a.Size}
	}
	return out, nil
}

// export writes an evidence bundle as linegate export does, from a
// snapshot of the store.
func (g *instance) export(ctx context.Context, sel evidence.Selection, dir string) (*evidence.Manifest, error) {
	vkey, err := os.ReadFile(vkeyPath(g.cfg.Log.KeyFile))
	if err != nil {
		return nil, err
	}
	view, err := g.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer view.Close()
	return evidence.Export(ctx, view, g.ring, vkey, g.cfg.Log.AnchorsDir, sel, dir)
}

// Bounds of the console's scan for deletion requests.
const (
	requestScan = 200000 // the latest records read
	requestMax  = 100    // the latest requests shown
)

// subjectRequests returns the latest deletion requests and consent
// withdrawals recorded (admin records "subject_request"), newest first.
//
// BUG: this reads the leaves of the latest requestScan records on each
// view of the auditor's page; older requests are not shown. An index of
// the requests, filled by their records' effect, would make it cheap.
func (g *instance) subjectRequests(ctx context.Context) ([]console.Request, error) {
	n, err := g.store.Count(ctx)
	if err != nil {
		return nil, err
	}
	var out []console.Request
	const batch = 4096
	for end := n; end > 0 && n-end < requestScan && len(out) < requestMax; {
		start := end - min(end, batch)
		leaves, err := g.store.ReadLeaves(ctx, start, end)
		if err != nil {
			return nil, err
		}
		for i := len(leaves) - 1; i >= 0 && len(out) < requestMax; i-- {
			var leaf ledger.Leaf
			if leaf.UnmarshalBinary(leaves[i]) != nil || leaf.Kind != ledger.KindAdmin {
				continue
			}
			if r, ok := g.openRequest(ctx, start+uint64(i)); ok {
				out = append(out, r)
			}
		}
		end = start
	}
	return out, nil
}

// openRequest opens admin record index, and returns it if it is a
// subject's request. A record that does not open (its subject's key
// destroyed since) is left out.
func (g *instance) openRequest(ctx context.Context, index uint64) (console.Request, bool) {
	for rec, err := range g.store.Records(ctx, index, index+1) {
		if err != nil {
			return console.Request{}, false
		}
		leaf, payload, err := ledger.CheckRecord(ctx, g.ring, rec)
		if err != nil || payload == nil {
			return console.Request{}, false
		}
		_, body, err := record.Decode(leaf.Kind, payload)
		a, ok := body.(*record.Admin)
		if err != nil || !ok || a.Action != "subject_request" {
			return console.Request{}, false
		}
		r := console.Request{Record: index, At: leaf.Time.UTC()}
		r.Subject, _ = a.Detail["subject"].(string)
		r.Kind, _ = a.Detail["kind"].(string)
		if c, ok := a.Detail["changed"].(float64); ok {
			r.Changed = int(c)
		}
		return r, true
	}
	return console.Request{}, false
}
