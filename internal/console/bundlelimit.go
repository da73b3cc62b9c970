package console

import (
	"fmt"
	"net/http"
	"strconv"
)

// bundleRetryAfter is the Retry-After of a bundle refused while another
// is being made.
const bundleRetryAfter = 30

// DefaultBundleMinFree is the free space (bytes) the bundle directory's
// file system must keep for a bundle to start, unless configured.
const DefaultBundleMinFree = 512 << 20

// startBundle admits one bundle export at a time per process, and only
// while the temporary directory's file system has BundleMinFree bytes
// free; otherwise it answers (429 with Retry-After, or 507) and returns
// false. done ends the export.
func (c *Console) startBundle(w http.ResponseWriter, r *http.Request, s *session) (done func(), ok bool) {
	select {
	case c.bundling <- struct{}{}:
	default:
		w.Header().Set("Retry-After", strconv.Itoa(bundleRetryAfter))
		c.errorPage(w, r, s, http.StatusTooManyRequests,
			fmt.Sprintf("Another evidence bundle is being made: one at a time. Try again in %d seconds.", bundleRetryAfter))
		return nil, false
	}
	release := func() { <-c.bundling }
	free, known, err := freeBytes(c.o.TempDir)
	if err != nil {
		release()
		c.failAction(w, r, s, "console_bundle", err)
		return nil, false
	}
	if c.o.BundleMinFree > 0 && known && free < uint64(c.o.BundleMinFree) {
		release()
		c.log.Warn("console: bundle refused: low disk space", "dir", c.o.TempDir, "free_bytes", free, "min_free_bytes", c.o.BundleMinFree)
		c.errorPage(w, r, s, http.StatusInsufficientStorage,
			"The gateway's disk is nearly full: no bundle is made until space is freed. Nothing was done.")
		return nil, false
	}
	return release, true
}
