// Package record declares what each kind of ledger record holds: one body
// type per kind, and one codec for all of them. Writers build a body and
// encode it; readers (verify, evidence, tail, tests) decode it into the
// same type, so that no reader depends on a field name that no type
// declares.
//
// A payload is framed as
//
//	u32 big-endian length of the metadata JSON | metadata JSON | body
//
// The metadata (Meta) says where and when; the body is the raw request as
// LINE sent it, byte for byte, for a webhook (LINE signs the exact bytes,
// so they are never re-encoded), and the JSON of the kind's body type for
// every other kind. Each body names the subjects whose data it holds, so
// that the record is sealed under their keys and shredding one of them
// reaches it.
//
// The package imports nothing of linegate's: the ledger, the stores and
// the tools all depend on it.
package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Kind says what a record is. It is part of the leaf, so its values are
// fixed forever: add new kinds, never renumber.
type Kind uint8

const (
	// KindWebhook is a verified webhook request from LINE, as received
	// (body Webhook).
	KindWebhook Kind = 1
	// KindRejection is a webhook request that failed authentication
	// (body Rejection): its size, body hash and headers, not its body.
	KindRejection Kind = 2
	// KindEvent is the outcome of one webhook event in the pipeline
	// (body Outcome).
	KindEvent Kind = 3
	// KindOutbound is a call to LINE or to a bot (a reply, a push, a
	// forward) and its answers, or the reason it was held back (body
	// Outbound).
	KindOutbound Kind = 4
	// KindAdmin is an operator's action (body Admin).
	KindAdmin Kind = 5
	// KindDeletion records that payloads were deleted (body Deletion).
	KindDeletion Kind = 6
	// KindMedia is the content of an image, video, audio or file message,
	// kept by linegate, or why it could not be (body Media).
	KindMedia Kind = 7
)

var kindNames = map[Kind]string{
	KindWebhook:   "webhook",
	KindRejection: "rejection",
	KindEvent:     "event",
	KindOutbound:  "outbound",
	KindAdmin:     "admin",
	KindDeletion:  "deletion",
	KindMedia:     "media",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// SubjectSystem is the subject of records that concern no LINE user,
// group or room (admin actions, deletions, requests that failed
// authentication).
const SubjectSystem = "system"

// Meta is the metadata half of a payload: what the request looked like
// around its body, or where and when a record was made.
type Meta struct {
	Channel    string              `json:"channel"`
	ReceivedMs int64               `json:"received_ms"`
	Remote     string              `json:"remote,omitempty"`
	Method     string              `json:"method,omitempty"`
	Path       string              `json:"path,omitempty"`
	Headers    map[string][]string `json:"headers,omitempty"`
	// Verifier names the key that verified the signature ("secret" or
	// "next_secret").
	Verifier string `json:"verifier,omitempty"`
	// For a rejection: why, how big the body was, and its SHA-256 (hex).
	Reason     string `json:"reason,omitempty"`
	BodySize   int64  `json:"body_size,omitempty"`
	BodySHA256 string `json:"body_sha256,omitempty"`
	// For a rejection, whose headers are kept in part: how many headers
	// there were, and their size in bytes.
	HeaderCount int   `json:"header_count,omitempty"`
	HeaderBytes int64 `json:"header_bytes,omitempty"`
	// For a summary of rejections not recorded one by one: how many
	// there were since SinceMs, and why (Reason "summary: " and the
	// reason; "summary: unavailable" counts signed webhooks answered 503
	// because the ledger could not take them, written once it could).
	Suppressed int64 `json:"suppressed,omitempty"`
	SinceMs    int64 `json:"since_ms,omitempty"`
}

// EncodePayload frames metadata and a body into one payload.
func EncodePayload(m *Meta, body []byte) ([]byte, error) {
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("record: encode metadata: %w", err)
	}
	p := make([]byte, 4, 4+len(mj)+len(body))
	binary.BigEndian.PutUint32(p, uint32(len(mj)))
	p = append(p, mj...)
	return append(p, body...), nil
}

// DecodePayload splits a payload written by EncodePayload and decodes its
// metadata.
func DecodePayload(p []byte) (*Meta, []byte, error) {
	mj, body, err := SplitPayload(p)
	if err != nil {
		return nil, nil, err
	}
	var m Meta
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, nil, fmt.Errorf("record: malformed payload metadata: %w", err)
	}
	return &m, body, nil
}

// SplitPayload splits a payload into its metadata JSON and its body.
func SplitPayload(p []byte) (meta, body []byte, err error) {
	if len(p) < 4 {
		return nil, nil, errors.New("record: malformed payload: short")
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return nil, nil, errors.New("record: malformed payload: metadata length")
	}
	return p[4 : 4+n], p[4+n:], nil
}

// Body is the body of a record of one kind.
type Body interface {
	// Kind is the kind of record the body is for.
	Kind() Kind
	// Subjects are the LINE users, groups and rooms ("user:U...") whose
	// data the body holds; none means the system's own.
	Subjects() []string
}

// Encode returns the payload of a record: meta and the body's JSON. A
// Webhook's raw body is framed as it is.
func Encode(m *Meta, b Body) ([]byte, error) {
	if w, ok := b.(*Webhook); ok {
		return EncodePayload(m, w.Raw)
	}
	if md, ok := b.(*Media); ok {
		body, err := md.encode()
		if err != nil {
			return nil, err
		}
		return EncodePayload(m, body)
	}
	j, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("record: encode %s: %w", b.Kind(), err)
	}
	return EncodePayload(m, j)
}

// Decode decodes the payload of a record of kind k into its metadata and
// the body type of its kind.
func Decode(k Kind, payload []byte) (*Meta, Body, error) {
	m, body, err := DecodePayload(payload)
	if err != nil {
		return nil, nil, err
	}
	var b Body
	switch k {
	case KindWebhook:
		return m, &Webhook{Raw: body}, nil
	case KindRejection:
		return m, &Rejection{Meta: *m}, nil
	case KindMedia:
		md, err := decodeMedia(body)
		if err != nil {
			return nil, nil, err
		}
		return m, md, nil
	case KindEvent:
		b = &Outcome{}
	case KindOutbound:
		b = &Outbound{}
	case KindAdmin:
		b = &Admin{}
	case KindDeletion:
		b = &Deletion{}
	default:
		return nil, nil, fmt.Errorf("record: unknown kind %d", uint8(k))
	}
	if err := json.Unmarshal(body, b); err != nil {
		return nil, nil, fmt.Errorf("record: malformed %s body: %w", k, err)
	}
	return m, b, nil
}

// Webhook is the body of a webhook record: the request body exactly as
// LINE sent and signed it. Its subjects are read from the events by the
// caller (line.BodySubjects), who knows the protocol.
type Webhook struct {
	Raw  []byte   `json:"-"`
	Subj []string `json:"-"`
}

func (*Webhook) Kind() Kind           { return KindWebhook }
func (w *Webhook) Subjects() []string { return w.Subj }

// Rejection is the body of a rejection record: everything is in its Meta
// (the reason, the body's size and SHA-256, the headers); it holds no
// LINE user's data, only what the unauthenticated sender sent.
type Rejection struct {
	Meta Meta `json:"-"`
}

func (*Rejection) Kind() Kind         { return KindRejection }
func (*Rejection) Subjects() []string { return nil }

// Outcome is the body of an event outcome record: what became of one
// event of a webhook record.
type Outcome struct {
	Record       uint64   `json:"record"` // the webhook record
	Index        int      `json:"index"`  // the event's position in it
	Key          string   `json:"key"`    // the dedup key
	Type         string   `json:"type"`
	Outcome      string   `json:"outcome"`
	Reason       string   `json:"reason,omitempty"`
	Flags        []string `json:"flags,omitempty"`
	Conversation string   `json:"conversation,omitempty"`
	ReceivedMs   int64    `json:"received_ms"`
	DoneMs       int64    `json:"done_ms"`
	// Subj are the subjects of the event (not encoded: the record's
	// keys name them).
	Subj []string `json:"-"`
}

func (*Outcome) Kind() Kind           { return KindEvent }
func (o *Outcome) Subjects() []string { return o.Subj }

// Attempt is one HTTP attempt of an outbound call.
type Attempt struct {
	Status          int                 `json:"status,omitempty"` // 0 when no response came
	Error           string              `json:"error,omitempty"`  // network error, without secrets
	RequestID       string              `json:"x_line_request_id,omitempty"`
	AcceptedRequest string              `json:"x_line_accepted_request_id,omitempty"`
	Headers         map[string][]string `json:"headers,omitempty"`
	Response        json.RawMessage     `json:"response,omitempty"`
	LatencyMs       float64             `json:"latency_ms"`
	At              time.Time           `json:"at"`
}

// Outbound is the body of an outbound record: a send to LINE (reply,
// push) or a forward to a bot, what was sent byte for byte, and every
// attempt's answer; or why it was held back.
type Outbound struct {
	EventKey string            `json:"event_key"`
	Record   uint64            `json:"webhook_record"`
	Rule     string            `json:"rule,omitempty"`
	Endpoint string            `json:"endpoint"`
	Outcome  string            `json:"outcome,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Class    string            `json:"class,omitempty"`
	Request  json.RawMessage   `json:"request"` // the exact body sent, or that would have been
	RetryKey string            `json:"retry_key,omitempty"`
	Attempts []Attempt         `json:"attempts,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
	// For a forward to a bot: where, the id of the secret that signed it
	// (never the secret), its status, and the error.
	URL       string  `json:"url,omitempty"`
	SecretID  string  `json:"secret_id,omitempty"`
	Status    int     `json:"status,omitempty"`
	Error     string  `json:"error,omitempty"`
	LatencyMs float64 `json:"latency_ms,omitempty"`
	// Agent names the person who sent it (a human reply, or a chat call
	// such as markAsRead made for them); empty for the bot's own sends.
	Agent string `json:"agent,omitempty"`
	// Tool names the tool whose call linegate's Messaging API proxy
	// carried; Endpoint is then the LINE path called.
	Tool string `json:"tool,omitempty"`
	// Subj are the subjects the send concerns (not encoded).
	Subj []string `json:"-"`
}

func (*Outbound) Kind() Kind           { return KindOutbound }
func (o *Outbound) Subjects() []string { return o.Subj }

// RequestIDs returns the x-line-request-id of every attempt that has one.
func (o *Outbound) RequestIDs() []string {
	var ids []string
	for _, a := range o.Attempts {
		if a.RequestID != "" {
			ids = append(ids, a.RequestID)
		}
	}
	return ids
}

// Admin is the body of an admin record: an operator's action (the kill
// switch, dry-run, consent, rule sets, legal holds, deletion requests,
// key rotations, acknowledged rollbacks), with what it changed in Detail,
// and the subject it concerns, if any: the record is sealed under that
// subject's key.
type Admin struct {
	Action  string         `json:"action"`
	Subject string         `json:"subject,omitempty"`
	Detail  map[string]any `json:"detail,omitempty"`
}

func (*Admin) Kind() Kind { return KindAdmin }
func (a *Admin) Subjects() []string {
	if a.Subject == "" || a.Subject == SubjectSystem {
		return nil
	}
	return []string{a.Subject}
}

// Deletion is the body of a deletion record: the records whose payloads
// were deleted, why, and on what basis each was due.
//
// It is sealed under the system's key, never a subject's: it must stay
// readable after the subject's key is destroyed, so that verify can tell
// "deleted by policy" from "missing". A shredded subject is named by its
// pseudonym (Pseudonym), not in the clear.
type Deletion struct {
	Deleted []uint64 `json:"deleted"`
	Reason  string   `json:"reason"`
	// Basis says why each record was due, by index: "retention" (its
	// time plus its class's keep period had passed), "request" (a
	// deletion request or consent withdrawal had set an earlier time,
	// not earlier than its class's least keep period), or "shred" (its
	// subject's data key was destroyed).
	Basis map[uint64]string `json:"basis,omitempty"`
	// Subject is the pseudonym of the subject whose key was destroyed.
	Subject string `json:"subject,omitempty"`
	// Detail says who asked, for an operator's deletion.
	Detail map[string]any `json:"detail,omitempty"`
}

func (*Deletion) Kind() Kind         { return KindDeletion }
func (*Deletion) Subjects() []string { return nil }

// Pseudonym returns the name under which a record that must outlive a
// subject's key refers to that subject: "sha256:" and the hex SHA-256 of
// the subject. Whoever knows the subject can recognise it; nobody can
// read it back.
func Pseudonym(subject string) string {
	s := sha256.Sum256([]byte(subject))
	return "sha256:" + hex.EncodeToString(s[:])
}

// SortedSubjects returns subjects sorted, without duplicates or the
// system subject.
func SortedSubjects(subjects []string) []string {
	out := slices.DeleteFunc(slices.Clone(subjects), func(s string) bool { return s == SubjectSystem || s == "" })
	slices.Sort(out)
	return slices.Compact(out)
}
