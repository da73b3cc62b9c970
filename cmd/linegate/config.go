package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/linegate/linegate/examples"
	"github.com/linegate/linegate/internal/chantoken"
	"github.com/linegate/linegate/internal/keys"
	"github.com/linegate/linegate/internal/ledger"
	"github.com/linegate/linegate/internal/line"
	"github.com/linegate/linegate/internal/outbound"
	"github.com/linegate/linegate/internal/retention"
	"github.com/linegate/linegate/internal/rules"
	"go.yaml.in/yaml/v3"
)

// Config is the YAML configuration of `linegate serve`. Unknown keys are an
// error, and so is a secret given in two ways.
//
// Relative paths of the files and directories a config names (rule files,
// subjects files, secret and token files, key files, TLS files,
// publish_dir, anchors_dir) are relative to the directory of the config
// file, so that a config works from any working directory; data_dir alone
// is relative to the working directory, as the places it defaults
// (log.key_file, publish_dir, anchors_dir, the KEK) are relative to it.
type Config struct {
	// DataDir holds the SQLite database, the checkpoint keys and the
	// published checkpoint. Relative paths are relative to the working
	// directory (default ./data).
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
	// Monitor sets the polls of LINE's API (see MonitorConfig).
	Monitor MonitorConfig `yaml:"monitor"`
	// Archive publishes checkpoints, tiles, anchors and evidence bundles to
	// object storage under Object Lock (see ArchiveConfig).
	Archive *ArchiveConfig `yaml:"archive"`
	// Witnesses cosign the checkpoints (see WitnessesConfig).
	Witnesses *WitnessesConfig `yaml:"witnesses"`
	// Fanout sets the delivery to the channels' destinations, and the
	// single webhook URL (see FanoutConfig, docs/FANOUT.md).
	Fanout FanoutConfig `yaml:"fanout"`
	// Proxy, if set, runs the Messaging API proxy (ProxyConfig).
	Proxy *ProxyConfig `yaml:"proxy"`
	// Media keeps the content of image, video, audio and file messages
	// (see MediaConfig, docs/MEDIA.md).
	Media MediaConfig `yaml:"media"`
	// Console, if set, serves the web console on the admin listener under
	// /console/ (see ConsoleConfig and docs/CONSOLE.md).
	Console *ConsoleConfig `yaml:"console"`

	builtin bool   // the built-in example: rule files come from the binary
	path    string // the file it was read from
	site    *configSite
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
	var f policyFields
	if err := n.Decode(&f); err != nil {
		return err
	}
	*p = PolicyConfig(f)
	return nil
}

// policyFields are the keys of a retention class given as a map.
type policyFields struct {
	Law                  string         `yaml:"law"`
	Keep                 time.Duration  `yaml:"keep"`
	MinKeep              time.Duration  `yaml:"min_keep"`
	AfterDeletionRequest *time.Duration `yaml:"after_deletion_request"`
	AfterWithdrawal      *time.Duration `yaml:"after_withdrawal"`
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
	// Instead of an access token, tokens that linegate issues and renews
	// itself (tokenconfig.go): ChannelID is LINE's channel id; with the
	// channel secret alone, stateless tokens; with an assertion signing
	// key (a private JWK or PEM, RSA 2048: at most one of
	// assertion_key_file, assertion_key_env) and its kid, tokens v2.1 of
	// TokenLifetime (default 24h), revoked on shutdown. TokenRenewBefore
	// is how long before its expiry a token is replaced (default a third
	// of its lifetime).
	ChannelID        string        `yaml:"channel_id"`
	AssertionKeyFile string        `yaml:"assertion_key_file"`
	AssertionKeyEnv  string        `yaml:"assertion_key_env"`
	AssertionKID     string        `yaml:"assertion_kid"`
	TokenLifetime    time.Duration `yaml:"token_lifetime"`
	TokenRenewBefore time.Duration `yaml:"token_renew_before"`
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
	// CanaryGroup is the channel's canary group: a LINE group of internal
	// testers ("C" and 32 hex digits) that `linegate canary run` pushes a
	// marker to; a marker seen in any other conversation is a leak.
	CanaryGroup string `yaml:"canary_group"`
	// LineAPIBase overrides the top-level line_api_base for this channel.
	LineAPIBase string `yaml:"line_api_base"`
	// LineDataAPIBase overrides the top-level line_data_api_base (where
	// message content is fetched) for this channel.
	LineDataAPIBase string `yaml:"line_data_api_base"`
	// Unsend is what becomes of a message its user unsent: "keep" (the
	// default: kept under its retention, shown as unsent) or "delete"
	// (its payload and its media are deleted as on a deletion request).
	Unsend string `yaml:"unsend"`
	// DryRun makes this channel dry-run.
	DryRun bool `yaml:"dry_run"`
	// AllowDryRunHeader honours X-Line-Dry-Run: true on this channel's
	// webhooks, making that request's events dry-run (staging channels).
	AllowDryRunHeader bool `yaml:"allow_dry_run_header"`
	// RateLimit caps this channel's Messaging API calls per second
	// (default 1000; LINE allows 2000 by default).
	RateLimit float64 `yaml:"rate_limit"`
	// The channel's webhook_url and quota_budget (see ChannelLineConfig).
	ChannelLineConfig `yaml:",inline"`
	// Destinations receive the channel's events (see DestinationConfig,
	// docs/FANOUT.md).
	Destinations []DestinationConfig `yaml:"destinations"`
	// Handoff configures the handoff to people (serve_handoff.go).
	Handoff *HandoffConfig `yaml:"handoff"`

	site *configSite // where it was read
	path string      // channels[i]
}

// AudienceConfig is a group of subjects with its own retention class.
type AudienceConfig struct {
	Name      string `yaml:"name"`
	Retention string `yaml:"retention"`
	// Subjects lists user:U..., group:C... or room:R...; SubjectsFile
	// names a file of them, one per line (# starts a comment).
	Subjects     []string `yaml:"subjects"`
	SubjectsFile string   `yaml:"subjects_file"`

	site *configSite // where it was read
	path string      // channels[i].audiences[j]
}

// subjects returns the audience's subjects from the config and its file.
func (a *AudienceConfig) subjects() (map[string]bool, error) {
	m := make(map[string]bool)
	for i, s := range a.Subjects {
		if !ledger.ValidSubject(s) || s == ledger.SubjectSystem {
			return nil, a.site.errorf(fmt.Sprintf("%s.subjects[%d]", a.path, i), "%q is not a subject: want user:U..., group:C... or room:R...", s)
		}
		m[s] = true
	}
	if a.SubjectsFile != "" {
		b, err := os.ReadFile(a.SubjectsFile)
		if err != nil {
			return nil, a.site.errorf(a.path+".subjects_file", "%v", err)
		}
		n := 0
		for line := range strings.Lines(string(b)) {
			n++
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			if !ledger.ValidSubject(line) || line == ledger.SubjectSystem {
				return nil, a.site.errorf(a.path+".subjects_file", "%s:%d: %q is not a subject: want user:U..., group:C... or room:R..., one a line (# starts a comment)", a.SubjectsFile, n, line)
			}
			m[line] = true
		}
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
// Errors are keyErrors, which name the key, never the value.
func (s secretSource) resolve(getenv func(string) string, required bool) ([]byte, error) {
	n := 0
	for _, v := range []string{s.value, s.env, s.file} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, &keyError{s.what, fmt.Sprintf("given more than once: give only one of %[1]s, %[1]s_env, %[1]s_file", s.what)}
	case n == 0 && required:
		return nil, &keyError{s.what, fmt.Sprintf("missing: give %[1]s, %[1]s_env (an environment variable) or %[1]s_file (a file)", s.what)}
	case n == 0:
		return nil, nil
	case s.value != "":
		return []byte(s.value), nil
	case s.env != "":
		v := getenv(s.env)
		if v == "" {
			return nil, &keyError{s.what + "_env", fmt.Sprintf("environment variable %s is not set", s.env)}
		}
		return []byte(v), nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return nil, &keyError{s.what + "_file", err.Error()}
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, &keyError{s.what + "_file", fmt.Sprintf("%s is empty", s.file)}
	}
	return b, nil
}

var channelIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// builtinConfig names the built-in example config in loadConfig.
const builtinConfig = "builtin:examples/linegate.yaml"

// loadConfig reads the config file, or the built-in example when path is
// empty or builtinConfig. Relative paths in it are made relative to the
// file's directory (see Config).
func loadConfig(path string) (*Config, error) {
	data, name, dir := examples.Config, "examples/linegate.yaml (built in)", "examples"
	builtin := path == "" || path == builtinConfig
	if !builtin {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		name, dir = path, filepath.Dir(path)
	}
	c, err := parseConfig(name, dir, data)
	if err != nil {
		return nil, err
	}
	c.builtin, c.path = builtin, path
	return c, nil
}

// parseConfig decodes and checks a configuration read from the file name
// in dir, applying defaults. Every mistake found is reported, each with
// its file, line and key.
func parseConfig(name, dir string, data []byte) (*Config, error) {
	p := &configParser{configSite: configSite{file: name, lines: map[string]int{}}}
	root := p.decodeYAML(data, reflect.TypeFor[Config]())
	if len(p.errs) > 0 || root == nil {
		return nil, p.err()
	}
	var c Config
	// Checked above; the decoder's own check stays, in case.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		p.yamlError(err)
		return nil, p.err()
	}
	c.site = &p.configSite
	c.resolvePaths(dir)
	c.check(p)
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	return &c, nil
}

// resolvePaths makes the relative paths of the files and directories the
// config names relative to dir, the config file's directory; data_dir
// stays relative to the working directory.
func (c *Config) resolvePaths(dir string) {
	if dir == "" || dir == "." {
		return
	}
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.RulesFiles {
		rel(&c.RulesFiles[i])
	}
	for _, r := range c.Rules {
		if r == nil {
			continue
		}
		rel(&r.ReplyFile)
		if r.Forward != nil {
			rel(&r.Forward.SecretFile)
		}
	}
	rel(&c.DatabaseFile)
	rel(&c.AdminTokenFile)
	if c.TLS != nil {
		rel(&c.TLS.CertFile)
		rel(&c.TLS.KeyFile)
	}
	rel(&c.Log.KeyFile)
	rel(&c.Log.PublishDir)
	rel(&c.Log.AnchorsDir)
	rel(&c.Encryption.KEKFile)
	if c.Proxy != nil {
		for i := range c.Proxy.Tools {
			rel(&c.Proxy.Tools[i].TokenFile)
		}
		if c.Proxy.TLS != nil {
			rel(&c.Proxy.TLS.CertFile)
			rel(&c.Proxy.TLS.KeyFile)
		}
	}
	for i := range c.Encryption.PreviousKEKFiles {
		rel(&c.Encryption.PreviousKEKFiles[i])
	}
	for i := range c.Channels {
		ch := &c.Channels[i]
		rel(&ch.SecretFile)
		rel(&ch.NextSecretFile)
		rel(&ch.AccessTokenFile)
		rel(&ch.AssertionKeyFile)
		for j := range ch.Audiences {
			rel(&ch.Audiences[j].SubjectsFile)
		}
		for j := range ch.Destinations {
			rel(&ch.Destinations[j].SecretFile)
		}
	}
}

// check checks the values of a decoded config and applies the defaults,
// recording each mistake in p.
func (c *Config) check(p *configParser) {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:8081"
	}
	for key, addr := range map[string]string{"listen": c.Listen, "admin_listen": c.AdminListen} {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			p.fail(key, "%q: want host:port, such as 127.0.0.1:8080 or :8080", addr)
		}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxBodyBytes < 0 {
		p.fail("max_body_bytes", "%d: want a positive number of bytes, such as 1048576", c.MaxBodyBytes)
	}
	if c.Connections.IdleTimeout == 0 {
		c.Connections.IdleTimeout = 30 * time.Second
	}
	if c.Connections.Max < 0 {
		p.fail("connections.max", "%d: want a positive number (0: the default)", c.Connections.Max)
	}
	if c.Connections.PerClient < 0 {
		p.fail("connections.per_client", "%d: want a positive number (0: the default)", c.Connections.PerClient)
	}
	if c.Connections.IdleTimeout < 0 {
		p.fail("connections.idle_timeout", "%v: want a positive duration such as 30s", c.Connections.IdleTimeout)
	}
	switch {
	case c.Log.Origin == "":
		p.fail("log.origin", "required: the checkpoint's origin line, such as example.com/linegate/prod")
	case strings.ContainsAny(c.Log.Origin, "\n+ "):
		p.fail("log.origin", "%q: must not contain spaces, '+' or newlines; want a name such as example.com/linegate/prod", c.Log.Origin)
	}
	if c.Log.CheckpointInterval == 0 {
		c.Log.CheckpointInterval = time.Second
	}
	if c.Log.CheckpointInterval < 10*time.Millisecond {
		p.fail("log.checkpoint_interval", "%v: want at least 10ms (default 1s)", c.Log.CheckpointInterval)
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
		p.fail("log.anchor_tz", "%q: want an IANA time zone such as Asia/Tokyo or UTC", c.Log.AnchorTZ)
	}
	if c.Log.AnchorEvery == 0 {
		c.Log.AnchorEvery = 24 * time.Hour
	}
	if c.Log.AnchorEvery < time.Second {
		p.fail("log.anchor_every", "%v: want at least 1s (default 24h)", c.Log.AnchorEvery)
	}
	if c.TLS != nil {
		if c.TLS.CertFile == "" {
			p.fail("tls.cert_file", "required with tls: the certificate chain, PEM")
		}
		if c.TLS.KeyFile == "" {
			p.fail("tls.key_file", "required with tls: the certificate's private key, PEM")
		}
		switch c.TLS.MinVersion {
		case "", "1.2", "1.3":
		default:
			p.fail("tls.min_version", "%q: want \"1.2\" or \"1.3\"", c.TLS.MinVersion)
		}
	}
	switch c.Logging.Format {
	case "", "json", "text":
	default:
		p.fail("logging.format", "%q: want json or text", c.Logging.Format)
	}
	if c.Logging.Level != "" {
		var level slog.Level
		if level.UnmarshalText([]byte(c.Logging.Level)) != nil {
			p.fail("logging.level", "%q: want debug, info, warn or error", c.Logging.Level)
		}
	}
	if c.Ledger.QueueSize < 0 || c.Ledger.MaxBatch < 0 || c.Ledger.MaxPages < 0 {
		p.fail("ledger", "queue_size, max_batch and max_pages must be 0 (the default) or more")
	}
	if c.Pipeline.Workers < 0 {
		p.fail("pipeline.workers", "%d: want a positive number (default 16)", c.Pipeline.Workers)
	}
	if err := rules.CheckLookupHosts(c.LookupHosts); err != nil {
		p.fail("lookup_hosts", "%v", err)
	}
	c.checkProxy(p)
	for name, pc := range c.Retention.Policies {
		if pc.Keep < 0 || pc.MinKeep < 0 {
			p.fail("retention.policies."+name, "a period must be 0 or more")
		}
	}
	if c.Retention.PurgeEvery != nil && *c.Retention.PurgeEvery < 0 {
		p.fail("retention.purge_every", "%v: want a duration such as 1h (0s: only linegate purge)", *c.Retention.PurgeEvery)
	}
	if _, ok := c.policies()[c.Rejections.Retention]; c.Rejections.Retention != "" && !ok {
		p.fail("rejections.retention", "retention class %q is neither a preset (%s) nor in retention.policies", c.Rejections.Retention, presetNames())
	}
	if c.Rejections.PerSecond < 0 || c.Rejections.Burst < 0 || c.Rejections.SummaryEvery < 0 {
		p.fail("rejections", "per_second, burst and summary_every must be 0 (the default) or more")
	}
	if c.Encryption.KEKFile != "" && c.Encryption.KEKEnv != "" {
		p.fail("encryption", "give kek_file or kek_env, not both")
	}
	c.checkMedia(p)
	if len(c.Channels) == 0 {
		p.fail("channels", "no channels: give at least one, with an id and its secret (see examples/linegate.yaml)")
	}
	seen := map[string]string{}
	for i := range c.Channels {
		ch := &c.Channels[i]
		ch.site, ch.path = c.site, fmt.Sprintf("channels[%d]", i)
		at := func(key string) string { return ch.path + "." + key }
		if !channelIDPattern.MatchString(ch.ID) {
			p.fail(at("id"), "%q: want 1 to 64 of A-Z a-z 0-9 . _ - (it names the channel in the webhook URL, /webhook/ID)", ch.ID)
		}
		switch ch.DriftPolicy {
		case "", "accept", "quarantine":
		default:
			p.fail(at("drift_policy"), "%q: want accept or quarantine", ch.DriftPolicy)
		}
		switch ch.ClockSkew {
		case "", "flag", "hold":
		default:
			p.fail(at("clock_skew"), "%q: want flag or hold", ch.ClockSkew)
		}
		if ch.BotUserID != "" && !line.ValidDestination(ch.BotUserID) {
			p.fail(at("bot_user_id"), "%q: want U and 32 hex digits (userId of GET /v2/bot/info)", ch.BotUserID)
		}
		if ch.CanaryGroup != "" && !canaryGroupPattern.MatchString(ch.CanaryGroup) {
			p.fail(at("canary_group"), "%q: want C and 32 hex digits (a LINE group id, the source.groupId of its events)", ch.CanaryGroup)
		}
		if _, ok := c.keep()[ch.Retention]; ch.Retention != "" && !ok {
			p.fail(at("retention"), "retention class %q is neither a preset (%s) nor in retention.policies", ch.Retention, presetNames())
		}
		ch.checkTokenConfig(p, at)
		if ch.RateLimit < 0 {
			p.fail(at("rate_limit"), "%v: want a positive number of calls a second (default 2000)", ch.RateLimit)
		}
		for j := range ch.Audiences {
			a := &ch.Audiences[j]
			a.site, a.path = c.site, fmt.Sprintf("%s.audiences[%d]", ch.path, j)
			if a.Name == "" {
				p.fail(a.path+".name", "required: every audience needs a name")
			}
			if _, ok := c.keep()[a.Retention]; !ok {
				p.fail(a.path+".retention", "retention class %q is neither a preset (%s) nor in retention.policies", a.Retention, presetNames())
			}
		}
		if first, ok := seen[ch.ID]; ok && ch.ID != "" {
			p.fail(at("id"), "channel %q is listed twice (first as %s)", ch.ID, first)
		}
		seen[ch.ID] = ch.path
	}
	c.checkMonitor(p)
	c.checkArchive(p)
	c.checkFanout(p)
	c.checkHandoff(p)
	c.checkConsole(p)
}

// presetNames lists the preset retention classes.
func presetNames() string {
	return strings.Join(sortedKeys(retention.Presets()), ", ")
}

// channelSecrets is a channel's resolved secrets.
type channelSecrets struct {
	secret, next, token []byte
	// issue is set when linegate issues the channel's tokens; tokens is
	// then their source, once serve has started it.
	issue  *chantoken.Credentials
	tokens outbound.TokenSource
}

func (ch *ChannelConfig) resolve(getenv func(string) string) (channelSecrets, error) {
	var s channelSecrets
	var err error
	wrap := func(err error) error {
		if ch.site == nil {
			return fmt.Errorf("config: channel %q: %w", ch.ID, err)
		}
		return ch.site.locate(ch.path, err)
	}
	if s.secret, err = (secretSource{"secret", ch.Secret, ch.SecretEnv, ch.SecretFile}).resolve(getenv, true); err != nil {
		return s, wrap(err)
	}
	if s.next, err = (secretSource{"next_secret", ch.NextSecret, ch.NextSecretEnv, ch.NextSecretFile}).resolve(getenv, false); err != nil {
		return s, wrap(err)
	}
	if s.token, err = (secretSource{"access_token", ch.AccessToken, ch.AccessTokenEnv, ch.AccessTokenFile}).resolve(getenv, false); err != nil {
		return s, wrap(err)
	}
	if s.issue, err = ch.tokenCredentials(getenv, s.secret, s.next, ch.LineAPIBase); err != nil {
		return s, wrap(err)
	}
	return s, nil
}

func (c *Config) adminToken(getenv func(string) string) ([]byte, error) {
	t, err := (secretSource{"admin_token", c.AdminToken, c.AdminTokenEnv, c.AdminTokenFile}).resolve(getenv, false)
	if err != nil {
		return nil, c.site.locate("", err)
	}
	return t, nil
}

// EncryptionConfig names the key encryption key (KEK) that wraps the
// subjects' data keys. The current KEK wraps new data keys; previous ones
// still unwrap data keys that `linegate keys rotate` has not re-wrapped.
type EncryptionConfig struct {
	// The current KEK: one of kek_file and kek_env, base64 of 32 bytes
	// (`linegate keys new-kek`). With neither, DataDir/kek, which serve
	// creates on its first start.
	KEKFile string `yaml:"kek_file"`
	KEKEnv  string `yaml:"kek_env"`
	// Previous KEKs, during a rotation.
	PreviousKEKFiles []string `yaml:"previous_kek_files"`
	PreviousKEKEnvs  []string `yaml:"previous_kek_envs"`
}

// defaultKEKFile is the KEK file used when the config names none.
func (c *Config) defaultKEKFile() string { return filepath.Join(c.DataDir, "kek") }

// kekConfig returns where the config's KEKs come from. Only the default
// file beside the data may be created, by serve on its first start (and
// only while the store holds no data keys: see keys.Config); a kek_file
// that the config names must exist.
func (c *Config) kekConfig(getenv func(string) string) (keys.Config, error) {
	ec := c.Encryption
	var kc keys.Config
	switch {
	case ec.KEKFile != "" && ec.KEKEnv != "":
		return kc, c.site.errorf("encryption", "give kek_file or kek_env, not both")
	case ec.KEKEnv != "":
		v := getenv(ec.KEKEnv)
		if v == "" {
			return kc, c.site.errorf("encryption.kek_env", "environment variable %s is not set", ec.KEKEnv)
		}
		k, err := keys.ParseKEK(v)
		if err != nil {
			return kc, c.site.errorf("encryption.kek_env", "%s: %v (want base64 of 32 bytes: linegate keys new-kek)", ec.KEKEnv, err)
		}
		kc.Current = k
	case ec.KEKFile != "":
		kc.CurrentFile = ec.KEKFile
	default:
		kc.CurrentFile, kc.Create = c.defaultKEKFile(), true
	}
	for i, f := range ec.PreviousKEKFiles {
		k, err := keys.LoadKEKFile(f)
		if err != nil {
			return kc, c.site.errorf(fmt.Sprintf("encryption.previous_kek_files[%d]", i), "%v", err)
		}
		kc.Previous = append(kc.Previous, k)
	}
	for i, name := range ec.PreviousKEKEnvs {
		k, err := keys.ParseKEK(getenv(name))
		if err != nil {
			return kc, c.site.errorf(fmt.Sprintf("encryption.previous_kek_envs[%d]", i), "%s: %v (want base64 of 32 bytes)", name, err)
		}
		kc.Previous = append(kc.Previous, k)
	}
	return kc, nil
}
