package handoff

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The bounds of what the admin API writes into the ledger as a person's
// words.
const (
	// MaxNameRunes bounds an agent's name and role.
	MaxNameRunes = 64
	// MaxReasonRunes bounds a takeover's reason.
	MaxReasonRunes = 500
)

// lineConversation matches a conversation id of LINE's forms: a user's
// one-on-one chat, a group, a room.
var lineConversation = regexp.MustCompile(`^(user:U|group:C|room:R)[0-9a-f]{32}$`)

// ValidConversationID reports whether id is "user:U…", "group:C…" or
// "room:R…" with LINE's 32 hexadecimal digits.
func ValidConversationID(id string) bool { return lineConversation.MatchString(id) }

// checkText refuses a name, role or reason that is not printable text of
// at most max characters: no control characters, no bidi or other format
// characters (which would make a ledger line read otherwise than it is),
// no leading or trailing space.
func checkText(what, s string, max int) error {
	if !utf8.ValidString(s) {
		return invalid("%s is not UTF-8", what)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return invalid("%s is %d characters long: at most %d", what, n, max)
	}
	if strings.TrimSpace(s) != s {
		return invalid("%s starts or ends with a space", what)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return invalid("%s has a character that is not printable (%U)", what, r)
		}
	}
	return nil
}

// seen reports whether the channel has an event of the conversation in the
// ledger, or a stored state for it.
func (s *Service) seen(ctx context.Context, channel, id string) (bool, error) {
	if _, err := s.o.Store.Conversation(ctx, channel, id); err == nil {
		return true, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	_, lt, err := s.scan(ctx, channel, id, 1)
	if err != nil {
		return false, err
	}
	return lt.eventKey != "", nil
}

// errUnseen is a takeover of a conversation the channel never saw.
var errUnseen = fmt.Errorf("%w: the channel has no event of this conversation (set \"allow_unseen\": true to take it over all the same)", ErrNotFound)

// maxMessageDepth bounds how deeply a person's message nests (a Flex
// bubble of 26 boxes nested in one another fits), so that its outbound
// record stays within what the record's JSON decoder reads.
const maxMessageDepth = 56

// jsonDepth returns how deeply the JSON text b nests its objects and
// arrays (brackets inside strings do not count).
func jsonDepth(b []byte) int {
	depth, max, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				max = depth
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}
