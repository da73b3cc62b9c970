package media

import (
	"context"
	"errors"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/record"
	"github.com/linegate/linegate/internal/retention"
)

// SubjectRecords finds a subject's records (retention.Store's method).
type SubjectRecords interface {
	SubjectRecords(ctx context.Context, subject string, from uint64, limit int) ([]retention.Candidate, error)
}

// unsendWindow is how far back an unsent message is looked for: LINE lets
// a user unsend a message within 24 hours (an hour more for clocks).
const unsendWindow = 25 * time.Hour

// unsendJob is an unsend event on a channel whose policy is "delete".
type unsendJob struct {
	leaf    ledger.Leaf
	rec     uint64
	user    string // the user who unsent
	message string // the message unsent
	at      time.Time
}

// unsendRequest works out the deletion that an unsend asks for under the
// "delete" policy, as a deletion request of the user would: the records
// that hold the unsent message (the webhook record, when every event of
// it is the user's own, so that no one else's data goes with it, and the
// media records of its content) get a delete-after time of the unsend,
// but never before their class's least keep period; the purge deletes
// them then, unless a legal hold keeps them. It returns the request's
// admin record and its effect, or nothing when no record is found.
func (w *Worker) unsendRequest(ctx context.Context, u unsendJob) (*ledger.Entry, ledger.Effect, error) {
	subject := "user:" + u.user
	var found []retention.Candidate
	for from := uint64(0); ; {
		cs, err := w.o.Subjects.SubjectRecords(ctx, subject, from, 1000)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range cs {
			from = c.Index + 1
			if c.Index >= u.rec || c.TimeMs < u.at.Add(-unsendWindow).UnixMilli() {
				continue
			}
			ok, err := w.holdsMessage(ctx, c.Index, u)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				found = append(found, c)
			}
		}
		if len(cs) < 1000 {
			break
		}
	}
	var changed []retention.Candidate
	var deleteAfter [][2]int64
	for _, c := range found {
		t := max(u.at.UnixMilli(), c.TimeMs+w.o.MinKeep[c.Class].Milliseconds())
		if c.DeleteAfterMs != 0 && c.DeleteAfterMs <= t {
			continue
		}
		c.DeleteAfterMs = t
		changed = append(changed, c)
		deleteAfter = append(deleteAfter, [2]int64{int64(c.Index), t})
	}
	if len(changed) == 0 {
		return nil, nil, nil
	}
	body := &record.Admin{Action: "subject_request", Subject: subject, Detail: map[string]any{
		"subject": subject, "kind": "unsend", "channel": u.leaf.Channel, "message_id": u.message, "unsend_record": u.rec,
		"at_ms": u.at.UnixMilli(), "records": len(found), "changed": len(changed), "delete_after": deleteAfter,
		"why": "the user unsent the message, and the channel's unsend policy is delete",
	}}
	now := w.o.Now()
	payload, err := record.Encode(&record.Meta{Channel: u.leaf.Channel, ReceivedMs: now.UnixMilli()}, body)
	if err != nil {
		return nil, nil, err
	}
	return &ledger.Entry{Kind: ledger.KindAdmin, Time: now, Channel: u.leaf.Channel, Payload: payload, Subjects: body.Subjects()},
		retention.SetDeleteAfter{Records: changed}, nil
}

// holdsMessage reports whether record i holds the unsent message alone
// among other people's data: a webhook record with the message whose
// events are all the user's, or a media record of the message.
func (w *Worker) holdsMessage(ctx context.Context, i uint64, u unsendJob) (bool, error) {
	for rec, err := range w.o.Log.Records(ctx, i, i+1) {
		if err != nil {
			return false, err
		}
		var leaf ledger.Leaf
		if rec.Leaf == nil || leaf.UnmarshalBinary(rec.Leaf) != nil || rec.Payload == nil || leaf.Channel != u.leaf.Channel {
			return false, nil
		}
		if leaf.Kind != record.KindWebhook && leaf.Kind != record.KindMedia {
			return false, nil
		}
		payload, err := ledger.OpenPayload(ctx, w.o.Sealer, rec)
		if errors.Is(err, ledger.ErrKeyDestroyed) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		_, b, err := record.Decode(leaf.Kind, payload)
		if err != nil {
			return false, nil
		}
		if m, ok := b.(*record.Media); ok {
			return m.MessageID == u.message, nil
		}
		cb, err := line.ParseCallback(b.(*record.Webhook).Raw)
		if err != nil {
			return false, nil
		}
		has := false
		for _, raw := range cb.Events {
			ev := line.DecodeEvent(raw)
			if ev.Source == nil || ev.Source.UserID != u.user || ev.Source.Type != "user" {
				return false, nil // someone else's data, or a group's: kept
			}
			if ev.Type == "message" && ev.Message != nil && ev.Message.ID == u.message {
				has = true
			}
		}
		return has, nil
	}
	return false, nil
}
