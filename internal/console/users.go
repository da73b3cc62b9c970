package console

import (
	"fmt"
	"slices"
)

// Role is what a console user may do.
type Role string

const (
	// RoleAgent answers conversations of its channels: the inbox.
	RoleAgent Role = "agent"
	// RoleAuditor reads the proof: verify, checkpoint, anchors, legal
	// holds, deletion requests, evidence bundles.
	RoleAuditor Role = "auditor"
	// RoleOperator runs the gateway: kill switch, dry-run, rules, LINE's
	// webhook endpoint and quota, the pipeline's backlog.
	RoleOperator Role = "operator"
	// RoleAdmin may do all of it, on every channel.
	RoleAdmin Role = "admin"
)

// ValidRole reports whether r is one of the four roles.
func ValidRole(r Role) bool {
	return r == RoleAgent || r == RoleAuditor || r == RoleOperator || r == RoleAdmin
}

// User is a person who may log into the console.
type User struct {
	Name string
	Role Role
	// Hash is the password's hash: argon2id (PHC string) or bcrypt.
	Hash string
	// Channels are the channels an agent sees; an admin sees all.
	Channels []string
}

// may reports whether the user may see channel's conversations.
func (u *User) may(channel string) bool {
	return u.Role == RoleAdmin || (u.Role == RoleAgent && slices.Contains(u.Channels, channel))
}

// channels returns the channels whose conversations the user sees.
func (u *User) channels(all []string) []string {
	if u.Role == RoleAdmin {
		return all
	}
	if u.Role == RoleAgent {
		return u.Channels
	}
	return nil
}

// CheckUsers checks a list of users: names unique and plain, roles known,
// hashes well formed, agents' channels among the configured ones. It
// names the user, never the hash.
func CheckUsers(users []User, channels []string) error {
	seen := map[string]bool{}
	for i, u := range users {
		switch {
		case u.Name == "" || len(u.Name) > 64 || !plainName(u.Name):
			return fmt.Errorf("users[%d].name: %q: want 1 to 64 letters, digits, '.', '_', '-' or '@'", i, u.Name)
		case seen[u.Name]:
			return fmt.Errorf("users[%d].name: %q is there twice", i, u.Name)
		case !ValidRole(u.Role):
			return fmt.Errorf("users[%d] (%s).role: %q: want agent, auditor, operator or admin", i, u.Name, u.Role)
		}
		seen[u.Name] = true
		if err := CheckHash(u.Hash); err != nil {
			return fmt.Errorf("users[%d] (%s).password_hash: %w", i, u.Name, err)
		}
		if u.Role == RoleAgent && len(u.Channels) == 0 {
			return fmt.Errorf("users[%d] (%s).channels: an agent needs the channels it answers", i, u.Name)
		}
		if u.Role != RoleAgent && len(u.Channels) > 0 {
			return fmt.Errorf("users[%d] (%s).channels: only agents have channels (an admin sees all)", i, u.Name)
		}
		for _, ch := range u.Channels {
			if !slices.Contains(channels, ch) {
				return fmt.Errorf("users[%d] (%s).channels: %q is not one of the config's channels", i, u.Name, ch)
			}
		}
	}
	return nil
}

func plainName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@') {
			return false
		}
	}
	return true
}
