// Package consoletest runs headless Chromium for the console's tests.
package consoletest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// chromiumPaths are where Debian's and others' Chromium live.
var chromiumPaths = []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}

// Chromium returns the path of a Chromium binary, or skips the test when
// there is none, unless LINEGATE_REQUIRE_BROWSER=1 (CI), where it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("LINEGATE_CHROMIUM"); p != "" {
		return p
	}
	for _, p := range chromiumPaths {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("LINEGATE_REQUIRE_BROWSER") == "1" {
		t.Fatal("LINEGATE_REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium)")
	}
	t.Skip("no Chromium (apt-get install chromium; LINEGATE_REQUIRE_BROWSER=1 makes this test required)")
	return ""
}

// Browser starts a headless Chromium with a fresh profile, with nothing
// fetched from the network by itself, and returns a tab's context, which
// ends with the test. Downloads go to DownloadDir.
type Browser struct {
	Ctx         context.Context
	DownloadDir string
}

// New starts the browser (see Chromium for when it skips).
func New(t testing.TB) *Browser {
	t.Helper()
	path := Chromium(t)
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.Flag("lang", "en-US"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b := &Browser{Ctx: ctx, DownloadDir: t.TempDir()}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: b.DownloadDir, EventsEnabled: ptr(true)})
		return err
	})); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

func ptr[T any](v T) *T { return &v }

// Download runs steps that download a file (a click) and returns the
// downloaded file's path, once complete.
func (b *Browser) Download(t testing.TB, steps ...chromedp.Action[chromedp.Void]) string {
	t.Helper()
	progress := chromedp.BrowserEvents(b.Ctx, browser.DownloadProgress)
	if err := chromedp.Do(b.Ctx, steps...); err != nil {
		t.Fatal(err)
	}
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			return filepath.Join(b.DownloadDir, ev.GUID)
		case browser.DownloadProgressStateCanceled:
			t.Fatal("download canceled")
		}
	}
	t.Fatal("download: no completion")
	return ""
}

// Screenshot writes a PNG of the whole page to dir/name.png when
// LINEGATE_SCREENSHOTS=1 (the docs' pictures), and does nothing otherwise.
func (b *Browser) Screenshot(t testing.TB, dir, name string) {
	t.Helper()
	if os.Getenv("LINEGATE_SCREENSHOTS") != "1" {
		return
	}
	// The viewport is made as tall as the page, so that all of it is
	// painted, then set back.
	h, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int64](`Math.max(900, document.documentElement.scrollHeight)`))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := chromedp.Do(b.Ctx, chromedp.EmulateViewport(1280, h)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := chromedp.Do(b.Ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Click clicks the element sel (a button that submits a form, a link)
// and waits for the page that follows; it returns that page's status.
func (b *Browser) Click(t testing.TB, sel string) int64 {
	t.Helper()
	resp, err := chromedp.RunResponse(b.Ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	return resp.Status
}

// Text returns the text of the element sel.
func (b *Browser) Text(t testing.TB, sel string) string {
	t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// Type types v into the element sel.
func (b *Browser) Type(t testing.TB, sel, v string) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, chromedp.SendKeys(chromedp.CSS(sel), v)); err != nil {
		t.Fatalf("type into %s: %v", sel, err)
	}
}

// Open navigates to url and returns the page's status.
func (b *Browser) Open(t testing.TB, url string) int64 {
	t.Helper()
	resp, err := chromedp.Run(b.Ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return resp.Status
}

// Login logs in on the console at base and returns the status of the page
// that follows.
func (b *Browser) Login(t testing.TB, base, name, password string) int64 {
	t.Helper()
	if code := b.Open(t, base+"/console/login"); code != 200 {
		t.Fatalf("login page: %d", code)
	}
	b.Type(t, "#name", name)
	b.Type(t, "#password", password)
	return b.Click(t, "#submit")
}
