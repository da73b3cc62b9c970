package line

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The webhook schema of ../shared/line/spec/webhook.yml (line-openapi), as
// data: required fields, types, enums, patterns and discriminators, plus
// messageEdited, which is newer than that copy of the spec. Validation walks
// it; the typed model in event.go decodes the same shapes.
//
// Written by hand because no Go OpenAPI validator we know reports, field by
// field, the three things the gateway must tell apart: a malformed event
// (quarantine), an event of a kind we do not know yet (keep as unknown),
// and fields or enum values newer than the spec (schema drift).

type kind int

const (
	kString kind = iota
	kInt
	kNumber
	kBool
	kObject
	kArray
	kAny
)

type field struct {
	name     string
	kind     kind
	required bool
	// legacy marks a required field that older webhooks (and LINE's SDK
	// fixtures) lack: its absence is accepted and reported as legacy.
	legacy  bool
	enum    []string
	pattern *regexp.Regexp
	obj     *schema // for kObject, and for the elements of kArray
	elemStr bool    // kArray of strings
}

type schema struct {
	fields []field
	// disc names the discriminator field; variants add fields by its value.
	disc     string
	variants map[string][]field
	// kinds says that the discriminator names the kind of the event, its
	// message or its source: a value the specification does not have
	// makes the event Unknown. Elsewhere (a mentionee, a membership or a
	// module type), an unknown value is drift of a known event.
	kinds bool
}

func f(name string, k kind) field   { return field{name: name, kind: k} }
func req(name string, k kind) field { return field{name: name, kind: k, required: true} }
func legacyReq(name string, k kind) field {
	return field{name: name, kind: k, required: true, legacy: true}
}
func obj(name string, s *schema) field { return field{name: name, kind: kObject, obj: s} }
func reqObj(name string, s *schema) field {
	return field{name: name, kind: kObject, required: true, obj: s}
}
func arr(name string, s *schema) field { return field{name: name, kind: kArray, obj: s} }
func reqArr(name string, s *schema) field {
	return field{name: name, kind: kArray, required: true, obj: s}
}
func enum(fl field, vals ...string) field { fl.enum = vals; return fl }
func strArr(name string, required bool) field {
	return field{name: name, kind: kArray, required: required, elemStr: true}
}

var (
	userSource   = &schema{fields: []field{req("type", kString), f("userId", kString)}}
	sourceSchema = &schema{
		fields: []field{req("type", kString)},
		disc:   "type",
		kinds:  true,
		variants: map[string][]field{
			"user":  {f("userId", kString)},
			"group": {req("groupId", kString), f("userId", kString)},
			"room":  {req("roomId", kString), f("userId", kString)},
		},
	}
	contentProvider = &schema{fields: []field{
		enum(req("type", kString), "line", "external"), f("originalContentUrl", kString), f("previewImageUrl", kString)}}
	emojiSchema = &schema{fields: []field{req("index", kInt), req("length", kInt), req("productId", kString), req("emojiId", kString)}}
	mentionee   = &schema{
		fields:   []field{req("type", kString), req("index", kInt), req("length", kInt)},
		disc:     "type",
		variants: map[string][]field{"user": {f("userId", kString), f("isSelf", kBool)}, "all": {}},
	}
	messageSchema = &schema{
		fields: []field{req("type", kString), req("id", kString), f("markAsReadToken", kString)},
		disc:   "type",
		kinds:  true,
		variants: map[string][]field{
			"text": {req("text", kString), arr("emojis", emojiSchema),
				obj("mention", &schema{fields: []field{reqArr("mentionees", mentionee)}}),
				legacyReq("quoteToken", kString), f("quotedMessageId", kString)},
			"image": {reqObj("contentProvider", contentProvider),
				obj("imageSet", &schema{fields: []field{req("id", kString), f("index", kInt), f("total", kInt)}}),
				legacyReq("quoteToken", kString)},
			"video":    {f("duration", kInt), reqObj("contentProvider", contentProvider), legacyReq("quoteToken", kString)},
			"audio":    {reqObj("contentProvider", contentProvider), f("duration", kInt)},
			"file":     {req("fileName", kString), req("fileSize", kInt)},
			"location": {f("title", kString), f("address", kString), req("latitude", kNumber), req("longitude", kNumber)},
			"sticker": {req("packageId", kString), req("stickerId", kString),
				func() field {
					fl := enum(legacyReq("stickerResourceType", kString), "STATIC", "ANIMATION", "SOUND", "ANIMATION_SOUND",
						"POPUP", "POPUP_SOUND", "CUSTOM", "MESSAGE", "NAME_TEXT", "PER_STICKER_TEXT")
					return fl
				}(),
				strArr("keywords", false), f("text", kString), legacyReq("quoteToken", kString), f("quotedMessageId", kString)},
		},
	}
	members = &schema{fields: []field{reqArr("members", userSource)}}

	// eventSchema is Event with its discriminated subtypes.
	eventSchema = &schema{
		fields: []field{
			req("type", kString), obj("source", sourceSchema), req("timestamp", kInt),
			enum(req("mode", kString), "active", "standby"),
			legacyReq("webhookEventId", kString),
			{name: "deliveryContext", kind: kObject, required: true, legacy: true, obj: &schema{fields: []field{req("isRedelivery", kBool)}}},
		},
		disc:  "type",
		kinds: true,
		variants: map[string][]field{
			"message":       {f("replyToken", kString), reqObj("message", messageSchema)},
			"messageEdited": {f("replyToken", kString), reqObj("message", messageSchema)},
			"unsend":        {reqObj("unsend", &schema{fields: []field{req("messageId", kString)}})},
			"follow": {req("replyToken", kString),
				{name: "follow", kind: kObject, required: true, legacy: true, obj: &schema{fields: []field{req("isUnblocked", kBool)}}}},
			"unfollow":     {},
			"join":         {req("replyToken", kString)},
			"leave":        {},
			"memberJoined": {req("replyToken", kString), reqObj("joined", members)},
			"memberLeft":   {reqObj("left", members)},
			"postback": {f("replyToken", kString), reqObj("postback", &schema{fields: []field{
				req("data", kString), f("params", kAny)}})},
			"videoPlayComplete": {req("replyToken", kString), reqObj("videoPlayComplete", &schema{fields: []field{req("trackingId", kString)}})},
			"beacon": {req("replyToken", kString), reqObj("beacon", &schema{fields: []field{
				req("hwid", kString), enum(req("type", kString), "enter", "banner", "stay"), f("dm", kString)}})},
			"accountLink": {f("replyToken", kString), reqObj("link", &schema{fields: []field{
				enum(req("result", kString), "ok", "failed"), req("nonce", kString)}})},
			"membership": {req("replyToken", kString), reqObj("membership", &schema{
				fields: []field{req("type", kString)},
				disc:   "type",
				variants: map[string][]field{
					"joined": {req("membershipId", kInt)}, "left": {req("membershipId", kInt)}, "renewed": {req("membershipId", kInt)},
				}})},
			"module": {reqObj("module", &schema{
				fields: []field{req("type", kString)},
				disc:   "type",
				variants: map[string][]field{
					"attached": {req("botId", kString), strArr("scopes", true)},
					"detached": {req("botId", kString), enum(req("reason", kString), "bot_deleted")},
				}})},
			"activated":    {reqObj("chatControl", &schema{fields: []field{req("expireAt", kInt)}})},
			"deactivated":  {},
			"botSuspended": {},
			"botResumed":   {},
			"delivery":     {reqObj("delivery", &schema{fields: []field{req("data", kString)}})},
		},
	}

	destinationPattern = regexp.MustCompile(`^U[0-9a-f]{32}$`)
)

// EventTypes lists the event types of the specification (and
// messageEdited).
func EventTypes() []string { return sortedKeys(eventSchema.variants) }

// MessageTypes lists the message types of the specification.
func MessageTypes() []string { return sortedKeys(messageSchema.variants) }

func sortedKeys(m map[string][]field) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// ProblemKind classifies what validation found.
type ProblemKind int

const (
	// Malformed: a required field is missing, or a field has the wrong type.
	Malformed ProblemKind = iota
	// Unknown: an event, message or source type the specification does not
	// have (yet).
	Unknown
	// Drift: a field, an enum value or a nested type (of a mentionee, a
	// membership, a module) the specification does not have.
	Drift
	// Legacy: a required field missing in the way older webhooks lack it.
	Legacy
)

func (k ProblemKind) String() string {
	return [...]string{"malformed", "unknown", "drift", "legacy"}[k]
}

// Problem is one finding, at a JSON path such as "message.text".
type Problem struct {
	Kind   ProblemKind
	Path   string
	Detail string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Kind, p.Path, p.Detail) }

// Flag names the problem's kind and field, as outcome records carry it:
// "drift:message.foo", "legacy:webhookEventId".
func (p Problem) Flag() string { return p.Kind.String() + ":" + p.Path }

// validate checks a decoded JSON value (from decodeGeneric) against s,
// appending problems found under path. The value is decoded once, for the
// whole event; validation walks it without scanning bytes again.
func validate(v any, s *schema, path string, out *[]Problem) {
	m, ok := v.(map[string]any)
	if !ok {
		*out = append(*out, Problem{Malformed, pathOr(path), "not a JSON object"})
		return
	}
	fields := s.fields
	// untyped: the discriminator is missing, empty or not a string (a
	// malformed object, reported as such): the fields of its variants are
	// not reported as drift, since which of them it should have is unknown.
	untyped := false
	if s.disc != "" {
		d, isString := m[s.disc].(string)
		switch {
		case isString && d == "":
			untyped = true
			*out = append(*out, Problem{Malformed, join(path, s.disc), "empty type"})
		case isString:
			v, ok := s.variants[d]
			if !ok {
				k := Drift
				if s.kinds {
					k = Unknown
				}
				*out = append(*out, Problem{k, join(path, s.disc), fmt.Sprintf("unknown type %q", d)})
				return // an unknown kind: its fields are not ours to judge
			}
			fields = append(slices.Clip(fields), v...)
		default:
			untyped = true // missing or not a string: reported below
		}
	}
	for _, fl := range fields {
		v, present := m[fl.name]
		p := join(path, fl.name)
		if !present || v == nil {
			switch {
			case fl.required && fl.legacy:
				*out = append(*out, Problem{Legacy, p, "missing (older webhook)"})
			case fl.required:
				*out = append(*out, Problem{Malformed, p, "required field missing"})
			}
			continue
		}
		checkValue(v, fl, p, out)
	}
	for k := range m {
		if !hasField(fields, k) && !(untyped && s.variantField(k)) {
			*out = append(*out, Problem{Drift, join(path, k), "field not in the specification"})
		}
	}
}

func hasField(fields []field, name string) bool {
	return slices.ContainsFunc(fields, func(f field) bool { return f.name == name })
}

// variantField reports whether name is a field of one of s's variants.
func (s *schema) variantField(name string) bool {
	for _, v := range s.variants {
		if hasField(v, name) {
			return true
		}
	}
	return false
}

func checkValue(v any, fl field, p string, out *[]Problem) {
	bad := func(want string) { *out = append(*out, Problem{Malformed, p, "not " + want}) }
	switch fl.kind {
	case kString:
		s, ok := v.(string)
		if !ok {
			bad("a string")
			return
		}
		if fl.enum != nil && s == "" {
			*out = append(*out, Problem{Malformed, p, "empty value"})
		} else if fl.enum != nil && !slices.Contains(fl.enum, s) {
			*out = append(*out, Problem{Drift, p, fmt.Sprintf("value %q not in the specification", s)})
		}
		if fl.pattern != nil && !fl.pattern.MatchString(s) {
			bad("matching " + fl.pattern.String())
		}
	case kInt:
		n, ok := v.(json.Number)
		if !ok || strings.ContainsAny(n.String(), ".eE") {
			bad("an integer")
		}
	case kNumber:
		if _, ok := v.(json.Number); !ok {
			bad("a number")
		}
	case kBool:
		if _, ok := v.(bool); !ok {
			bad("a boolean")
		}
	case kObject:
		if fl.obj != nil {
			validate(v, fl.obj, p, out)
		} else if _, ok := v.(map[string]any); !ok && fl.kind == kObject {
			bad("an object")
		}
	case kArray:
		items, ok := v.([]any)
		if !ok {
			bad("an array")
			return
		}
		for i, it := range items {
			ip := fmt.Sprintf("%s[%d]", p, i)
			if fl.elemStr {
				if _, ok := it.(string); !ok {
					*out = append(*out, Problem{Malformed, ip, "not a string"})
				}
			} else if fl.obj != nil {
				validate(it, fl.obj, ip, out)
			}
		}
	}
}

// decodeGeneric decodes JSON into maps, slices and json.Numbers.
func decodeGeneric(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func pathOr(p string) string {
	if p == "" {
		return "(event)"
	}
	return p
}
