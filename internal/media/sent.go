package media

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
)

// SentImages hashes the images that linegate sends: for each image
// message of a request body, it fetches originalContentUrl (inside Fence,
// at most MaxBytes, within Timeout, no redirects) and returns, by the
// message's position i, "image_sha256:i" and "image_bytes:i", or
// "image_error:i" with why it could not. The outbound record keeps them,
// so that what the user was shown can be proved later even if the image
// at the URL changes.
type SentImages struct {
	Fence    Fence
	MaxBytes int64         // default 10 MiB (LINE's limit for an image message)
	Timeout  time.Duration // per image, default 5s
}

// Annotate implements outbound.SenderOptions.Annotate.
func (s SentImages) Annotate(ctx context.Context, _ string, body []byte) map[string]string {
	var req struct {
		Messages []struct {
			Type               string `json:"type"`
			OriginalContentURL string `json:"originalContentUrl"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	maxBytes, timeout := s.MaxBytes, s.Timeout
	if maxBytes <= 0 {
		maxBytes = 10 << 20
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	out := map[string]string{}
	for i, m := range req.Messages {
		if m.Type != "image" || m.OriginalContentURL == "" {
			continue
		}
		n := strconv.Itoa(i)
		cctx, cancel := context.WithTimeout(ctx, timeout)
		content, _, err := FetchURL(cctx, s.Fence, m.OriginalContentURL, maxBytes, timeout)
		cancel()
		if err != nil {
			out["image_error:"+n] = err.Error()
			continue
		}
		out["image_sha256:"+n] = sum(content)
		out["image_bytes:"+n] = strconv.Itoa(len(content))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
