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
	ctx, cancelTime := context.WithTimeout(ctx, 3*time.Minute)
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
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
