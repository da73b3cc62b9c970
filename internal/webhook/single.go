package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/linegate/linegate/internal/oplog"
)

// serveSingle serves POST /webhook, the one URL of several channels: the
// body is read under the cap before anything else, its destination (the
// bot user id LINE puts in every webhook) names the channel, and the
// request then goes the way of one sent to /webhook/{channel}: verified
// with that channel's secrets, recorded, acknowledged once durable. A
// destination that names no configured bot is refused as an unknown
// channel is (404, logged within the rate limit, never recorded: nothing
// says which channel it would belong to); a bad signature is rejected
// and recorded within the channel's bounds, as on its own URL.
func (h *Handler) serveSingle(w http.ResponseWriter, r *http.Request) {
	received := h.now()
	if r.ContentLength > h.maxBody {
		h.tooLarge(r, "", r.ContentLength)
		h.finish(w, "", OutcomeTooLarge, http.StatusRequestEntityTooLarge, received)
		return
	}
	done := cuttable(r.Context(), BodyGrace)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	done()
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.tooLarge(r, "", -1)
			h.finish(w, "", OutcomeTooLarge, http.StatusRequestEntityTooLarge, received)
		} else {
			h.fails.Log(slog.LevelWarn, oplog.Key{Class: OutcomeBadRequest}, "webhook rejected: body not read",
				"remote", clientAddr(r), "err", oplog.Truncate(err.Error(), 200))
			h.finish(w, "", OutcomeBadRequest, http.StatusBadRequest, received)
		}
		return
	}
	// Only the destination: the events are for the pipeline, once the
	// body is verified and durable.
	var head struct {
		Destination string `json:"destination"`
	}
	json.Unmarshal(body, &head) // not JSON, or no destination: no channel
	ch := h.channels[h.byBot[head.Destination]]
	if head.Destination == "" || ch == nil {
		sum := sha256.Sum256([]byte(head.Destination))
		h.fails.Log(slog.LevelWarn, oplog.Key{Class: OutcomeUnknownChannel}, "webhook rejected: its destination is no configured channel's bot_user_id",
			"destination_sha256", hex.EncodeToString(sum[:6]), "destination_bytes", len(head.Destination), "remote", clientAddr(r))
		h.finish(w, "", OutcomeUnknownChannel, http.StatusNotFound, received)
		return
	}
	h.accept(w, r, ch, body, received)
}
