// Command controllers runs Argo Rollouts' and Flagger's own Go code against a live Driftline service.
//
//	controllers argo    -template FILE -service URL -feeder URL -model M -arg k=v ... -interval 1s
//	controllers flagger -canary FILE   -service URL -feeder URL -model M -checksum C -interval 1s
//
// Argo: the real analysis controller (github.com/argoproj/argo-rollouts/analysis) with its real web
// metric provider, on fake Kubernetes clientsets; the AnalysisRun is built from the example
// AnalysisTemplate by the same helper the rollout controller uses (utils/analysis). Flagger: the
// example Canary's webhooks are called with Flagger's own CallWebhook (pkg/controller), in the order
// and with the phases of its scheduler (pkg/controller/scheduler.go and scheduler_hooks.go, v1.41.0).
//
// Between the controller and the service sits a small proxy that, before it forwards each call,
// asks the test's feeder to ship one more window per arm through a real SDK Monitor, so interval k
// sees exactly k windows per arm. Each command prints one JSON line with the outcome.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
)

// proxy forwards every request to the service after one feed; it counts the calls it forwarded.
type proxy struct {
	service *url.URL
	feeder  string
	model   string
	calls   atomic.Int64
	rp      *httputil.ReverseProxy
}

func newProxy(service, feeder, model string) (*proxy, string, func()) {
	u, err := url.Parse(service)
	must(err)
	p := &proxy{service: u, feeder: feeder, model: model, rp: httputil.NewSingleHostReverseProxy(u)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := &http.Server{Handler: p}
	go srv.Serve(ln) //nolint:errcheck
	return p, "http://" + ln.Addr().String(), func() { srv.Close() }
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := http.Post(p.feeder+"/feed?model="+url.QueryEscape(p.model), "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		http.Error(w, fmt.Sprintf("feeder failed: %v", err), http.StatusBadGateway)
		return
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	p.calls.Add(1)
	p.rp.ServeHTTP(w, r)
}

var modelPath = regexp.MustCompile(`^/v1/models/[^/]+/`)

// rebase points an example's in-cluster URL at the proxy, keeping its path and query; with a model
// it also names that model in the path (each test scenario is its own model).
func rebase(raw, base, model string) string {
	rest, ok := strings.CutPrefix(raw, "http://")
	if !ok {
		must(fmt.Errorf("want an http:// URL, got %q", raw))
	}
	uri := "/"
	if i := strings.Index(rest, "/"); i >= 0 {
		uri = rest[i:] // kept verbatim: Argo's {{args.x}} placeholders must survive
	}
	if model != "" && !strings.Contains(uri, "{{") {
		uri = modelPath.ReplaceAllLiteralString(uri, "/v1/models/"+url.PathEscape(model)+"/")
	}
	return base + uri
}

// yamlDocs splits a multi-document YAML file.
func yamlDocs(path string) []string {
	b, err := os.ReadFile(path)
	must(err)
	var out []string
	for _, d := range strings.Split("\n"+string(b), "\n---") {
		if strings.TrimSpace(d) != "" {
			out = append(out, d)
		}
	}
	return out
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
}

func emit(v any) {
	b, err := json.Marshal(v)
	must(err)
	fmt.Println(string(b))
}

type kv map[string]string

func (m kv) String() string { return fmt.Sprint(map[string]string(m)) }
func (m kv) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want k=v, got %q", s)
	}
	m[k] = v
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: controllers argo|flagger [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	file := fs.String("file", "", "the example manifest (AnalysisTemplate or Canary)")
	service := fs.String("service", "", "Driftline's base URL")
	feeder := fs.String("feeder", "", "the test's feeder base URL")
	model := fs.String("model", "", "the model the feeder ships windows for")
	interval := fs.String("interval", "1s", "analysis interval (replaces the example's)")
	maxIntervals := fs.Int("max-intervals", 60, "give up after this many intervals")
	checksum := fs.String("checksum", "rev-1", "Flagger: the canary revision's checksum (LastAppliedSpec)")
	args := kv{}
	fs.Var(args, "arg", "Argo: an analysis arg name=value (repeatable)")
	must(fs.Parse(os.Args[2:]))
	p, base, stop := newProxy(*service, *feeder, *model)
	defer stop()
	switch os.Args[1] {
	case "argo":
		emit(runArgo(*file, base, *model, *interval, *maxIntervals, args, p))
	case "flagger":
		emit(runFlagger(*file, base, *model, *interval, *maxIntervals, *checksum, p))
	default:
		must(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
