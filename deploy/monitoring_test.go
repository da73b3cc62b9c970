package deploy_test

// The monitoring files (prometheus/, grafana/) against Prometheus's own
// tools and the code: promtool checks the alert rules and runs their unit
// tests, and every alert has a test that fires it and one that does not;
// amtool checks the Alertmanager example and its routing; every PromQL
// expression of the rules and the dashboard parses (Prometheus's own
// parser) and names only metrics that linegate registers.

import (
	"encoding/json"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile      = "prometheus/linegate-rules.yml"
	rulesTestFile  = "prometheus/linegate-rules.test.yml"
	amConfigFile   = "prometheus/alertmanager.yml"
	promConfigFile = "prometheus/prometheus.yml"
	dashboardFile  = "grafana/linegate.json"
)

// prometheusOwn are series Prometheus makes itself.
var prometheusOwn = []string{"up", "ALERTS"}

// TestPrometheusRules runs promtool check config (the example, which
// loads the rules), promtool check rules and promtool test rules.
func TestPrometheusRules(t *testing.T) {
	promtool := need(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", filepath.Base(promConfigFile)},
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(rulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert       string
			Expr        string
			For         string
			Labels      map[string]string
			Annotations map[string]string
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertRuleTests: every alert has a promtool test at a time it fires
// and one at a time it does not, and carries its runbook (summary,
// description, action, runbook_url) and a severity.
func TestAlertRuleTests(t *testing.T) {
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string
				ExpAlerts []any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	readYAML(t, rulesTestFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Errorf("%s tests %v, want %s", rulesTestFile, tests.RuleFiles, filepath.Base(rulesFile))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: tested firing %v, not firing %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
			for _, a := range []string{"summary", "description", "action", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if want := "docs/RUNBOOK.md#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if s := r.Labels["severity"]; s != "page" && s != "warning" {
				t.Errorf("alert %s: severity %q, want page or warning (alertmanager.yml routes on it)", r.Alert, s)
			}
		}
	}
	// The runbook's four signals, and the rest the rules promise.
	for _, want := range []string{
		"LinegateDeliveryDelayHigh", "LinegateAckLatencyHigh", "LinegateReplyLatencyHigh", "LinegateWebhookDisabled",
		"LinegateWebhookMoved", "LinegateSignatureFailures", "LinegateDuplicateMessageID", "LinegateLedgerUnavailable",
		"LinegatePipelineBacklogGrowing", "LinegateLineAPIErrors", "LinegateLineAPIRateLimited", "LinegateKillSwitchLeftOn",
		"LinegateClockDrift", "LinegateQuotaNearEnd", "LinegateTokenNearExpiry", "LinegateCanaryLeak", "LinegateAlertsNotRecorded",
	} {
		if !fires[want] {
			t.Errorf("no tested alert %s", want)
		}
	}
	t.Logf("%d alerts, each tested firing and not firing", alerts)
}

// exportedMetrics returns the names of the metrics linegate registers, as
// /metrics shows them: from the Name of every prometheus.*Opts literal in
// the code (a histogram's as _bucket, _sum and _count). A name is a string
// literal, a string constant of its package, or a sum of them; another
// fails the test: the names must be readable here.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	var dirs []string
	for _, root := range []string{"../cmd", "../internal"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range dirs {
		var files []*ast.File
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if n := e.Name(); e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			f, err := goparser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		// The package's string constants, for names built from them.
		consts := map[string]ast.Expr{}
		for _, f := range files {
			for _, decl := range f.Decls {
				if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.CONST {
					for _, spec := range gd.Specs {
						vs := spec.(*ast.ValueSpec)
						for i, id := range vs.Names {
							if i < len(vs.Values) {
								consts[id.Name] = vs.Values[i]
							}
						}
					}
				}
			}
		}
		var eval func(e ast.Expr, depth int) (string, bool)
		eval = func(e ast.Expr, depth int) (string, bool) {
			switch e := e.(type) {
			case *ast.BasicLit:
				if e.Kind == token.STRING {
					s, err := strconv.Unquote(e.Value)
					return s, err == nil
				}
			case *ast.Ident:
				if c, ok := consts[e.Name]; ok && depth < 8 {
					return eval(c, depth+1)
				}
			case *ast.BinaryExpr:
				if e.Op == token.ADD {
					x, okx := eval(e.X, depth+1)
					y, oky := eval(e.Y, depth+1)
					return x + y, okx && oky
				}
			case *ast.ParenExpr:
				return eval(e.X, depth+1)
			}
			return "", false
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				cl, ok := n.(*ast.CompositeLit)
				if !ok {
					return true
				}
				sel, ok := cl.Type.(*ast.SelectorExpr)
				if !ok || !slices.Contains([]string{"CounterOpts", "GaugeOpts", "HistogramOpts", "SummaryOpts"}, sel.Sel.Name) {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
					return true
				}
				for _, el := range cl.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					if k, ok := kv.Key.(*ast.Ident); !ok || k.Name != "Name" {
						continue
					}
					name, ok := eval(kv.Value, 0)
					if !ok || name == "" {
						t.Errorf("%s: a metric name the test cannot read: write it as a string literal or constant", fset.Position(kv.Pos()))
						continue
					}
					switch sel.Sel.Name {
					case "HistogramOpts":
						names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
					case "SummaryOpts":
						names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
					default:
						names[name] = true
					}
				}
				return true
			})
		}
	}
	if len(names) < 20 || !names["linegate_webhook_ack_seconds_bucket"] || !names["linegate_kill_switch"] {
		t.Fatalf("the code's metrics were not found (%d names): %v", len(names), names)
	}
	for n := range names {
		if !strings.HasPrefix(n, "linegate_") {
			t.Errorf("metric %s is not prefixed linegate_", n)
		}
	}
	return names
}

// exprMetrics parses a PromQL expression with Prometheus's own parser and
// returns the metric names it selects.
func exprMetrics(expr string) ([]string, error) {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names, nil
}

// grafanaVariables are the dashboard's variables, as Grafana fills them
// in, so that its queries parse as PromQL.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "6h",
	"$job", "linegate",
	"$channel", ".*",
)

// dashboardQueries returns every query of the dashboard (panels, the
// annotation, the variables' label_values), with where it is, variables
// filled in.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID         string
		Title       string
		Annotations struct {
			List []struct {
				Name string
				Expr string
			}
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query any
			}
		}
		Panels []panel
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("the dashboard has no uid or title")
	}
	out := map[string]string{}
	add := func(where, q string) {
		filled := grafanaVariables.Replace(q)
		if strings.Contains(filled, "$") {
			t.Errorf("%s: a variable the dashboard does not define: %s", where, q)
		}
		out[where] = filled
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			add("annotation "+a.Name, a.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, s)
			continue
		}
		add("variable "+v.Name, m[1])
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d is used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q has no size", p.Title)
			}
			if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				add("panel "+p.Title+" "+tg.RefID, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

type panel struct {
	ID      int
	Type    string
	Title   string
	GridPos struct{ H, W, X, Y int }
	Targets []struct {
		RefID string
		Expr  string
	}
	Panels []panel
}

// TestMonitoringMetricsExported: every expression of the alert rules and
// of the dashboard parses, and names only metrics linegate registers (or
// Prometheus's own up and ALERTS); the dashboard shows each figure it
// promises.
func TestMonitoringMetricsExported(t *testing.T) {
	exported := exportedMetrics(t)
	known := func(name string) bool {
		return exported[name] || slices.Contains(prometheusOwn, name)
	}
	exprs := map[string]string{}
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs["rule "+r.Alert] = r.Expr
		}
	}
	dashboard := dashboardQueries(t)
	for where, q := range dashboard {
		exprs[where] = q
	}
	inDashboard := map[string]bool{}
	for where, expr := range exprs {
		names, err := exprMetrics(expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", where, err, expr)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s selects no metric: %s", where, expr)
		}
		for _, n := range names {
			if !known(n) {
				t.Errorf("%s names %q, which linegate does not export", where, n)
			}
			if _, ok := dashboard[where]; ok {
				inDashboard[n] = true
			}
		}
	}
	// What an auditor photographs: latency percentiles, webhooks by
	// outcome, signature failures, drift and skew, sends by outcome, the
	// switches, the ledger's size and checkpoint age, the last verify.
	for _, want := range []string{
		"linegate_webhook_ack_seconds_bucket", "linegate_reply_latency_seconds_bucket", "linegate_webhook_requests_total",
		"linegate_webhook_signature_failures_total", "linegate_clock_drift_seconds", "linegate_pipeline_clock_skew_total",
		"linegate_outbound_sends_total", "linegate_kill_switch", "linegate_dry_run", "linegate_ledger_tree_size",
		"linegate_ledger_checkpoint_timestamp_seconds", "linegate_verify_last_run_timestamp_seconds", "linegate_verify_ok",
	} {
		if !inDashboard[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	var names []string
	for n := range inDashboard {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d expressions; the dashboard shows %s", len(exprs), strings.Join(names, ", "))
}

// TestAlertmanagerConfig: amtool accepts the example, which sends every
// alert to linegate's ledger with the admin token from a file, and pages
// on severity "page" alone.
func TestAlertmanagerConfig(t *testing.T) {
	amtool := need(t, "amtool")
	if out, err := exec.Command(amtool, "check-config", amConfigFile).CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("amtool check-config: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		labels []string
		want   string
	}{
		{[]string{"alertname=LinegateSignatureFailures", "severity=page", "channel=shop"}, "linegate-ledger,on-call"},
		{[]string{"alertname=LinegateKillSwitchLeftOn", "severity=warning"}, "linegate-ledger"},
	} {
		args := append([]string{"config", "routes", "test", "--config.file=" + amConfigFile}, tt.labels...)
		out, err := exec.Command(amtool, args...).Output() // stdout: the receivers
		if err != nil || strings.TrimSpace(string(out)) != tt.want {
			t.Errorf("amtool config routes test %v = %v %q, want %q", tt.labels, err, out, tt.want)
		}
	}
	var cfg struct {
		Receivers []struct {
			Name           string
			WebhookConfigs []struct {
				URL          string `yaml:"url"`
				SendResolved bool   `yaml:"send_resolved"`
				HTTPConfig   struct {
					Authorization struct {
						Type            string
						CredentialsFile string `yaml:"credentials_file"`
					}
				} `yaml:"http_config"`
			} `yaml:"webhook_configs"`
		}
	}
	readYAML(t, amConfigFile, &cfg)
	found := false
	for _, r := range cfg.Receivers {
		for _, w := range r.WebhookConfigs {
			if strings.HasSuffix(w.URL, "/admin/alerts") {
				found = true
				if !w.SendResolved || w.HTTPConfig.Authorization.Type != "Bearer" || w.HTTPConfig.Authorization.CredentialsFile == "" {
					t.Errorf("receiver %s: send_resolved %v, authorization %+v; want resolved alerts too, a bearer token from a file",
						r.Name, w.SendResolved, w.HTTPConfig.Authorization)
				}
			}
		}
	}
	if !found {
		t.Errorf("no receiver posts to /admin/alerts")
	}
}

// TestVerifyTimer: the daily verify's units pass systemd-analyze verify,
// and the service runs verify with -metrics-file into Debian's textfile
// directory, which it may write, as the rules' LinegateVerifyNotRun and the
// dashboard expect.
func TestVerifyTimer(t *testing.T) {
	svc, err := os.ReadFile("systemd/linegate-verify.service")
	if err != nil {
		t.Fatal(err)
	}
	const execStart = "ExecStart=/usr/local/bin/linegate verify -config /etc/linegate/linegate.yaml -metrics-file /var/lib/prometheus/node-exporter/linegate-verify.prom"
	if !strings.Contains(string(svc), "\n"+execStart+"\n") || !strings.Contains(string(svc), "\nReadWritePaths=/var/lib/prometheus/node-exporter\n") {
		t.Errorf("linegate-verify.service does not run %q with its directory writable", execStart)
	}
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "LinegateVerifyNotRun" && !strings.Contains(r.Annotations["action"], "/var/lib/prometheus/node-exporter/linegate-verify.prom") {
				t.Errorf("LinegateVerifyNotRun's action names another metrics file than the timer's")
			}
		}
	}
	sa := need(t, "systemd-analyze")
	d := t.TempDir()
	u := replaceAll(t, string(svc), "ExecStart=/usr/local/bin/linegate ", "ExecStart="+linegateBin+" ")
	if err := os.WriteFile(filepath.Join(d, "linegate-verify.service"), []byte(u), 0o644); err != nil {
		t.Fatal(err)
	}
	timer, err := os.ReadFile("systemd/linegate-verify.timer")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "linegate-verify.timer"), timer, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", filepath.Join(d, "linegate-verify.service"), filepath.Join(d, "linegate-verify.timer")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestMetricsLint scrapes the real binary's /metrics: promtool check
// metrics finds nothing to say of it (names, units, help), and every
// linegate_ family it shows is among the names read from the code, so that
// the checks above see what the binary exports.
func TestMetricsLint(t *testing.T) {
	promtool := need(t, "promtool")
	dir := t.TempDir()
	g := startGateway(t, dir, installConfig(t, dir, nil))
	code, metrics := get(t, "http://"+g.admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	exported := exportedMetrics(t)
	families := 0
	for line := range strings.Lines(metrics) {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" || !strings.HasPrefix(f[2], "linegate_") {
			continue
		}
		families++
		name := f[2]
		if f[3] == "histogram" {
			name += "_bucket"
		}
		if !exported[name] {
			t.Errorf("/metrics shows %s (%s), which the names read from the code lack", f[2], f[3])
		}
	}
	if families < 20 {
		t.Errorf("/metrics shows %d linegate_ families:\n%s", families, metrics)
	}
}

// TestRunbookAnchors: each alert's runbook_url points at a section of
// docs/RUNBOOK.md: a heading whose GitHub anchor it is, or an element with
// that id.
func TestRunbookAnchors(t *testing.T) {
	b, err := os.ReadFile("../docs/RUNBOOK.md")
	if err != nil {
		t.Skipf("no runbook: %v", err)
	}
	anchors := map[string]bool{}
	punct := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	ids := regexp.MustCompile(`(?:id|name)="([^"]+)"`)
	for line := range strings.Lines(string(b)) {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			anchors[strings.ReplaceAll(punct.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
		}
		for _, m := range ids.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
	}
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			_, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
			if !anchors[anchor] {
				t.Errorf("alert %s: docs/RUNBOOK.md has no section #%s", r.Alert, anchor)
			}
		}
	}
}
