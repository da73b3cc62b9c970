package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"go.yaml.in/yaml/v3"
)

// Config is the YAML configuration of `linegate serve`. Unknown keys are an
// error, and so is a secret given in two ways.
type Config struct {
	// DataDir holds the SQLite database, the checkpoint keys and the
	// published checkpoint. Relative paths are relative to the working
	// directory.
	DataDir string `yaml:"data_dir"`
	// Database, if set, is a PostgreSQL address (postgres://...) that
	// replaces the SQLite database: one of database, database_env (the
	// name of an environment variable that holds it) and database_file.
	Database     string `yaml:"database"`
	DatabaseEnv  string `yaml:"database_env"`
	DatabaseFile string `yaml:"database_file"`
	// Listen is the webhook listener's address.
	Listen string `yaml:"listen"`
	// AdminListen is the admin listener's address (/metrics, /log/,
	// /admin/, pprof). Loopback by default.
	AdminListen string `yaml:"admin_listen"`
	// AdminToken authenticates /admin/ calls as a bearer token. One of
	// admin_token, admin_token_env, admin_token_file; none refuses them.
	AdminToken     string `yaml:"admin_token"`
	AdminTokenEnv  string `yaml:"admin_token_env"`
	AdminTokenFile string `yaml:"admin_token_file"`
	// MaxBodyBytes caps webhook bodies (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// TLS, if set, makes the webhook listener serve HTTPS itself.
	TLS *TLSConfig `yaml:"tls"`
	// Connections bounds the webhook listener's connections.
	Connections ConnectionsConfig `yaml:"connections"`

	// LineAPIBase is the Messaging API's base URL (default
	// https://api.line.me); channels may set their own.
	LineAPIBase string `yaml:"line_api_base"`
	// RulesFiles name YAML rule files; Rules and Consent are inline rules
	// and consent keywords, added to theirs.
	RulesFiles []string      `yaml:"rules_files"`
	Rules      []*rules.Rule `yaml:"rules"`
	Consent    rules.Consent `yaml:"consent"`
	// LookupHosts is the allow-list of hosts that rule lookups may call:
	// "host:port", or "host" for the URL scheme's default port alone (443
	// for https, 80 for http). Host and port must both match; redirects
	// are not followed.
	LookupHosts []string `yaml:"lookup_hosts"`
	// DryRun makes every channel dry-run: rules run, nothing is sent, the
	// ledger records what would have been.
	DryRun bool `yaml:"dry_run"`

	Log        LogConfig        `yaml:"log"`
	Ledger     LedgerConfig     `yaml:"ledger"`
	Pipeline   PipelineConfig   `yaml:"pipeline"`
	Retention  RetentionConfig  `yaml:"retention"`
	Rejections RejectionsConfig `yaml:"rejections"`
	Encryption EncryptionConfig `yaml:"encryption"`
	Logging    LoggingConfig    `yaml:"logging"`
	Channels   []ChannelConfig  `yaml:"channels"`

	builtin bool   // the built-in example: rule files come from the binary
	path    string // the file it was read from
}

// ConnectionsConfig bounds the webhook listener's connections, so that
// idle or slow clients cannot take every file descriptor (the admin
// listener stays reachable): at most max open (a new one evicts the
// longest-idle keep-alive connection, or is closed when none is idle), at
// most per_client from one address, each idle at most idle_timeout.
type ConnectionsConfig struct {
	Max         int           `yaml:"max"`          // default 4096
	PerClient   int           `yaml:"per_client"`   // default 256
	IdleTimeout time.Duration `yaml:"idle_timeout"` // default 30s
}

// TLSConfig is the webhook listener's certificate.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// LogConfig configures the Merkle log.
type LogConfig struct {
	// Origin is the checkpoint origin line and the checkpoint key's name.
	Origin string `yaml:"origin"`
	// CheckpointInterval is how often records are integrated and a
	// checkpoint signed (default 1s).
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// KeyFile is the checkpoint signing key (default DataDir/log.key); its
	// public half is beside it with the extension .vkey.
	KeyFile string `yaml:"key_file"`
	// PublishDir receives a copy of each new checkpoint as the file
	// "checkpoint", outside the database (default DataDir/published). It
	// may be a WORM bucket mount.
	PublishDir string `yaml:"publish_dir"`
	// Public also serves /log/ on the webhook listener.
	Public bool `yaml:"public"`
	// AnchorsDir receives the daily proof of integrity: at the end of each
	// day the checkpoint (NAME.checkpoint) and its consistency proof from
	// the previous day's (NAME.consistency), written once, never
	// rewritten (default DataDir/anchors). Make it a WORM mount.
	AnchorsDir string `yaml:"anchors_dir"`
	// AnchorTZ is the time zone whose midnight ends the day (default UTC).
	AnchorTZ string `yaml:"anchor_tz"`
	// AnchorEvery is the anchor period (default 24h, at midnight in
	// AnchorTZ). Shorter periods are for testing a deployment.
	AnchorEvery time.Duration `yaml:"anchor_every"`
}

// LedgerConfig tunes group commit.
type LedgerConfig struct {
	// QueueSize bounds the requests waiting for a commit; beyond it,
	// webhooks get 503 (default 8192).
	QueueSize int `yaml:"queue_size"`
	// MaxBatch bounds the records in one commit (default 1024).
	MaxBatch int `yaml:"max_batch"`
	// MaxPages caps the SQLite database at this many 4 KiB pages; 0 is no
	// cap. Beyond it, writes fail as on a full disk and webhooks get 503.
	MaxPages int64 `yaml:"max_pages"`
}

// PipelineConfig tunes event processing.
type PipelineConfig struct {
	// Workers is the number of conversations handled at once (default 16).
	Workers int `yaml:"workers"`
	// ClockThreshold flags an event whose timestamp is further than this
	// from its receive time, unless LINE marked it a redelivery (default
	// 2s).
	ClockThreshold time.Duration `yaml:"clock_threshold"`
	// DedupHorizon is how long webhookEventIds are remembered (default
	// 168h). LINE redelivers within a day or so; keep it longer.
	DedupHorizon time.Duration `yaml:"dedup_horizon"`
}

// RejectionsConfig bounds what requests that fail authentication (a
// missing or bad signature) write to the ledger: each is recorded (its
// size, body hash and a few headers, truncated) up to per_second a second
// per channel, and the rest are counted in a summary record every
// summary_every.
type RejectionsConfig struct {
	// Retention is the retention class of rejection records (default
	// "rejections": 90 days).
	Retention string `yaml:"retention"`
	// PerSecond and Burst bound the records per channel (defaults 5, 20).
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
	// SummaryEvery is how often the counts of the others are recorded
	// (default 1m).
	SummaryEvery time.Duration `yaml:"summary_every"`
}

// RetentionConfig configures deletion on schedule.
type RetentionConfig struct {
	// Policies adds retention classes or changes the presets (jp-appi,
	// th-pdpa, tw-pipa). A class is a duration (how long payloads are kept
	// after the record's time; 0 keeps them until deleted otherwise), or
	// a map with keep, min_keep, after_deletion_request, after_withdrawal
	// and law. A channel, or an audience, names its class with retention:.
	Policies map[string]PolicyConfig `yaml:"policies"`
	// PurgeEvery is how often serve deletes expired payloads (default 1h;
	// 0 disables it; run linegate purge instead).
	PurgeEvery *time.Duration `yaml:"purge_every"`
}

// PolicyConfig is a retention class in the config: a duration, or the
// fields of retention.Policy.
type PolicyConfig retention.Policy

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *PolicyConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var d time.Duration
		if err := n.Decode(&d); err != nil {
			return err
		}
		*p = PolicyConfig{Keep: d}
		return nil
	}
	var f struct {
		Law                  string         `yaml:"law"`
		Keep                 time.Duration  `yaml:"keep"`
		MinKeep              time.Duration  `yaml:"min_keep"`
		AfterDeletionRequest *time.Duration `yaml:"after_deletion_request"`
		AfterWithdrawal      *time.Duration `yaml:"after_withdrawal"`
	}
	if err := n.Decode(&f); err != nil {
		return err
	}
	*p = PolicyConfig(f)
	return nil
}

// policies returns the retention classes: presets, then config.
func (c *Config) policies() map[string]retention.Policy {
	m := retention.Presets()
	for name, p := range c.Retention.Policies {
		m[name] = retention.Policy(p)
	}
	return m
}

// keep returns how long payloads are kept, by class.
func (c *Config) keep() map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, p := range c.policies() {
		m[name] = p.Keep
	}
	return m
}

// LoggingConfig configures the process log.
type LoggingConfig struct {
	Format string `yaml:"format"` // json (default) or text
	Level  string `yaml:"level"`  // debug, info (default), warn, error
}

// ChannelConfig is one LINE channel.
type ChannelConfig struct {
	// ID names the channel in the webhook URL, /webhook/{id}.
	ID string `yaml:"id"`
	// The channel secret: exactly one of secret, secret_env, secret_file.
	Secret     string `yaml:"secret"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	// The next secret, accepted too during a rotation: at most one.
	NextSecret     string `yaml:"next_secret"`
	NextSecretEnv  string `yaml:"next_secret_env"`
	NextSecretFile string `yaml:"next_secret_file"`
	// The channel access token, for sending: at most one.
	AccessToken     string `yaml:"access_token"`
	AccessTokenEnv  string `yaml:"access_token_env"`
	AccessTokenFile string `yaml:"access_token_file"`
	// Retention is the retention class recorded with each record.
	Retention string `yaml:"retention"`
	// Audiences give groups of the channel's users, groups or rooms their
	// own retention classes (the first audience with one of a request's
	// subjects decides).
	Audiences []AudienceConfig `yaml:"audiences"`
	// DriftPolicy says what to do with events that carry fields or enum
	// values the specification does not have: "accept" (default: process
	// them, count them as schema drift) or "quarantine".
	DriftPolicy string `yaml:"drift_policy"`
	// ClockSkew says what to do with events whose timestamp is far from
	// their receive time: "flag" (default: process them, flagged) or
	// "hold" (record them as held, do not process them).
	ClockSkew string `yaml:"clock_skew"`
	// BotUserID is the channel's bot user id ("U" and 32 hex digits; GET
	// /v2/bot/info answers it as userId). When set, a webhook whose
	// destination names another bot is recorded as foreign and never
	// answered; unset, the destination is not checked.
	BotUserID string `yaml:"bot_user_id"`
	// LineAPIBase overrides the top-level line_api_base for this channel.
	LineAPIBase string `yaml:"line_api_base"`
	// DryRun makes this channel dry-run.
	DryRun bool `yaml:"dry_run"`
	// AllowDryRunHeader honours X-Line-Dry-Run: true on this channel's
	// webhooks, making that request's events dry-run (staging channels).
	AllowDryRunHeader bool `yaml:"allow_dry_run_header"`
	// RateLimit caps this channel's Messaging API calls per second
	// (default 1000; LINE allows 2000 by default).
	RateLimit float64 `yaml:"rate_limit"`
}

// AudienceConfig is a group of subjects with its own retention class.
type AudienceConfig struct {
	Name      string `yaml:"name"`
	Retention string `yaml:"retention"`
	// Subjects lists user:U..., group:C... or room:R...; SubjectsFile
	// names a file of them, one per line (# starts a comment).
	Subjects     []string `yaml:"subjects"`
	SubjectsFile string   `yaml:"subjects_file"`
}

// subjects returns the audience's subjects from the config and its file.
func (a *AudienceConfig) subjects() (map[string]bool, error) {
	list := slices.Clone(a.Subjects)
	if a.SubjectsFile != "" {
		b, err := os.ReadFile(a.SubjectsFile)
		if err != nil {
			return nil, fmt.Errorf("audience %q: %w", a.Name, err)
		}
		for line := range strings.Lines(string(b)) {
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				list = append(list, line)
			}
		}
	}
	m := make(map[string]bool, len(list))
	for _, s := range list {
		if !ledger.ValidSubject(s) || s == ledger.SubjectSystem {
			return nil, fmt.Errorf("audience %q: %q is not a subject (user:U..., group:C... or room:R...)", a.Name, s)
		}
		m[s] = true
	}
	return m, nil
}

// secretSource is one secret given as a value, an environment variable or
// a file.
type secretSource struct {
	what             string
	value, env, file string
}

// resolve returns the secret, or nil when none is given and !required.
// Errors name the key, never the value.
func (s secretSource) resolve(getenv func(string) string, required bool) ([]byte, error) {
	n := 0
	for _, v := range []string{s.value, s.env, s.file} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, fmt.Errorf("%s: give only one of %[1]s, %[1]s_env, %[1]s_file", s.what)
	case n == 0 && required:
		return nil, fmt.Errorf("%s: missing (give %[1]s, %[1]s_env or %[1]s_file)", s.what)
	case n == 0:
		return nil, nil
	case s.value != "":
		return []byte(s.value), nil
	case s.env != "":
		v := getenv(s.env)
		if v == "" {
			return nil, fmt.Errorf("%s_env: environment variable %s is not set", s.what, s.env)
		}
		return []byte(v), nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return nil, fmt.Errorf("%s_file: %w", s.what, err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, fmt.Errorf("%s_file: %s is empty", s.what, s.file)
	}
	return b, nil
}

var channelIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// parseConfig decodes and checks a configuration, applying defaults.
func parseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:8081"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxBodyBytes < 0 {
		return nil, errors.New("config: max_body_bytes must be positive")
	}
	if c.Connections.IdleTimeout == 0 {
		c.Connections.IdleTimeout = 30 * time.Second
	}
	if c.Connections.Max < 0 || c.Connections.PerClient < 0 || c.Connections.IdleTimeout < 0 {
		return nil, errors.New("config: connections: max, per_client and idle_timeout must be positive")
	}
	if c.Log.Origin == "" {
		return nil, errors.New("config: log.origin is required (the checkpoint's origin line, such as example.com/linegate/prod)")
	}
	if strings.ContainsAny(c.Log.Origin, "\n+ ") {
		return nil, errors.New("config: log.origin must not contain spaces, '+' or newlines")
	}
	if c.Log.CheckpointInterval == 0 {
		c.Log.CheckpointInterval = time.Second
	}
	if c.Log.CheckpointInterval < 10*time.Millisecond {
		return nil, errors.New("config: log.checkpoint_interval must be at least 10ms")
	}
	if c.Log.KeyFile == "" {
		c.Log.KeyFile = filepath.Join(c.DataDir, "log.key")
	}
	if c.Log.PublishDir == "" {
		c.Log.PublishDir = filepath.Join(c.DataDir, "published")
	}
	if c.Log.AnchorsDir == "" {
		c.Log.AnchorsDir = filepath.Join(c.DataDir, "anchors")
	}
	if c.Log.AnchorTZ == "" {
		c.Log.AnchorTZ = "UTC"
	}
	if _, err := time.LoadLocation(c.Log.AnchorTZ); err != nil {
		return nil, fmt.Errorf("config: log.anchor_tz %q: want an IANA time zone such as Asia/Tokyo", c.Log.AnchorTZ)
	}
	if c.Log.AnchorEvery == 0 {
		c.Log.AnchorEvery = 24 * time.Hour
	}
	if c.Log.AnchorEvery < time.Second {
		return nil, errors.New("config: log.anchor_every must be at least 1s")
	}
	if c.TLS != nil {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return nil, errors.New("config: tls needs cert_file and key_file")
		}
		switch c.TLS.MinVersion {
		case "", "1.2", "1.3":
		default:
			return nil, fmt.Errorf("config: tls.min_version %q: want 1.2 or 1.3", c.TLS.MinVersion)
		}
	}
	switch c.Logging.Format {
	case "", "json", "text":
	default:
		return nil, fmt.Errorf("config: logging.format %q: want json or text", c.Logging.Format)
	}
	if err := rules.CheckLookupHosts(c.LookupHosts); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(c.Channels) == 0 {
		return nil, errors.New("config: no channels")
	}
	seen := map[string]bool{}
	for i, ch := range c.Channels {
		if !channelIDPattern.MatchString(ch.ID) {
			return nil, fmt.Errorf("config: channels[%d].id %q: want 1 to 64 of A-Z a-z 0-9 . _ -", i, ch.ID)
		}
		switch ch.DriftPolicy {
		case "", "accept", "quarantine":
		default:
			return nil, fmt.Errorf("config: channel %q: drift_policy %q: want accept or quarantine", ch.ID, ch.DriftPolicy)
		}
		switch ch.ClockSkew {
		case "", "flag", "hold":
		default:
			return nil, fmt.Errorf("config: channel %q: clock_skew %q: want flag or hold", ch.ID, ch.ClockSkew)
		}
		if ch.BotUserID != "" && !line.ValidDestination(ch.BotUserID) {
			return nil, fmt.Errorf("config: channel %q: bot_user_id %q: want U and 32 hex digits", ch.ID, ch.BotUserID)
		}
		if _, ok := c.policies()[c.Rejections.Retention]; c.Rejections.Retention != "" && !ok {
			return nil, fmt.Errorf("config: rejections.retention: retention class %q is neither a preset (rejections, jp-appi, th-pdpa, tw-pipa) nor in retention.policies", c.Rejections.Retention)
		}
		if _, ok := c.keep()[ch.Retention]; ch.Retention != "" && !ok {
			return nil, fmt.Errorf("config: channel %q: retention class %q is neither a preset (jp-appi, th-pdpa, tw-pipa) nor in retention.policies", ch.ID, ch.Retention)
		}
		for j, a := range ch.Audiences {
			if a.Name == "" {
				return nil, fmt.Errorf("config: channel %q: audiences[%d] needs a name", ch.ID, j)
			}
			if _, ok := c.keep()[a.Retention]; !ok {
				return nil, fmt.Errorf("config: channel %q: audience %q: retention class %q is neither a preset (jp-appi, th-pdpa, tw-pipa) nor in retention.policies", ch.ID, a.Name, a.Retention)
			}
		}
		if seen[ch.ID] {
			return nil, fmt.Errorf("config: channel %q is listed twice", ch.ID)
		}
		seen[ch.ID] = true
	}
	return &c, nil
}

// channelSecrets is a channel's resolved secrets.
type channelSecrets struct {
	secret, next, token []byte
}

func (ch *ChannelConfig) resolve(getenv func(string) string) (channelSecrets, error) {
	var s channelSecrets
	var err error
	wrap := func(err error) error { return fmt.Errorf("config: channel %q: %w", ch.ID, err) }
	if s.secret, err = (secretSource{"secret", ch.Secret, ch.SecretEnv, ch.SecretFile}).resolve(getenv, true); err != nil {
		return s, wrap(err)
	}
	if s.next, err = (secretSource{"next_secret", ch.NextSecret, ch.NextSecretEnv, ch.NextSecretFile}).resolve(getenv, false); err != nil {
		return s, wrap(err)
	}
	if s.token, err = (secretSource{"access_token", ch.AccessToken, ch.AccessTokenEnv, ch.AccessTokenFile}).resolve(getenv, false); err != nil {
		return s, wrap(err)
	}
	return s, nil
}

func (c *Config) adminToken(getenv func(string) string) ([]byte, error) {
	t, err := (secretSource{"admin_token", c.AdminToken, c.AdminTokenEnv, c.AdminTokenFile}).resolve(getenv, false)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return t, nil
}
