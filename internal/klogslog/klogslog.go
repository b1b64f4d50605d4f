// Package klogslog routes klog, the logger of every embedded upstream
// component (kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet, kube-proxy) and of CoreDNS's kubernetes plugin, into the
// process's slog handler, each line labelled subsystem=<component>.
//
// klog is one per process, so the component is found from the code that
// logged: the innermost function on the call stack that belongs to a
// component's own packages (Subsystem), or set outright for a component
// that takes a context (NewContext). Lines from shared libraries on a
// goroutine no component frame is on (client-go informers, say) are
// labelled "klog", with their caller and logger name.
//
// Install sets the sink at start. Upstream code replaces it: the kubelet
// applies its logging configuration (it is given Format, so it installs
// this sink again), and CoreDNS's kubernetes plugin installs its own on
// every start, which relabels every line as its own; its caller runs
// Reclaim after starting CoreDNS.
//
// Imported by the cli (Install), the agent and the network (Format,
// NewContext, Reclaim); it imports only klog, logr and component-base.
package klogslog

import (
	"context"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
)

// Format is the log format registered with component-base: a component
// given it (the kubelet's logging.format) installs this package's sink.
const Format = "cloudless"

// Unattributed labels lines no component can be found for.
const Unattributed = "klog"

var (
	mu      sync.Mutex
	handler slog.Handler // the one Install was given
)

func init() {
	if err := logsapi.RegisterLogFormat(Format, factory{}, logsapi.LoggingStableOptions); err != nil {
		panic("klogslog: " + err.Error())
	}
}

// Install sends all klog output to h from now on.
func Install(h slog.Handler) {
	mu.Lock()
	handler = h
	mu.Unlock()
	set(h)
}

// Reclaim installs the sink again after upstream code replaced it; it does
// nothing before Install.
func Reclaim() {
	mu.Lock()
	h := handler
	mu.Unlock()
	if h != nil {
		set(h)
	}
}

func set(h slog.Handler) {
	klog.SetLoggerWithOptions(logr.New(&sink{h: h}), klog.ContextualLogger(false))
}

func current() slog.Handler {
	mu.Lock()
	defer mu.Unlock()
	if handler == nil {
		return slog.Default().Handler()
	}
	return handler
}

// NewContext returns ctx carrying a logger whose lines are all labelled
// subsystem: upstream code that logs through klog.FromContext(ctx) uses it.
func NewContext(ctx context.Context, subsystem string) context.Context {
	return klog.NewContext(ctx, logr.New(&sink{h: current(), subsystem: subsystem}))
}

// factory makes the sink for components applying Format.
type factory struct{}

func (factory) Create(logsapi.LoggingConfiguration, logsapi.LoggingOptions) (logr.Logger, logsapi.RuntimeControl) {
	return logr.New(&sink{h: current()}), logsapi.RuntimeControl{}
}

// sink is a logr.LogSink writing to a slog.Handler.
type sink struct {
	h         slog.Handler
	subsystem string // fixed; empty: found from the call stack
	name      string
	depth     int
}

var _ logr.CallDepthLogSink = (*sink)(nil)

func (s *sink) Init(info logr.RuntimeInfo) { s.depth += info.CallDepth }

// Enabled applies klog's verbosity (-v, -vmodule) to loggers used
// directly through a context; klog's own calls arrive at level 0.
func (s *sink) Enabled(level int) bool {
	return level == 0 || klog.VDepth(s.depth+2, klog.Level(level)).Enabled()
}

func (s *sink) Info(level int, msg string, kv ...any) {
	s.log(slog.LevelInfo, level, msg, nil, kv)
}

func (s *sink) Error(err error, msg string, kv ...any) {
	s.log(slog.LevelError, 0, msg, err, kv)
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.h = s.h.WithAttrs(attrs(kv))
	return &c
}

func (s *sink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "/" + name
	}
	c.name = name
	return &c
}

func (s *sink) WithCallDepth(depth int) logr.LogSink {
	c := *s
	c.depth += depth
	return &c
}

// stackDepth is how many frames are looked at to find the component.
const stackDepth = 64

func (s *sink) log(lvl slog.Level, v int, msg string, err error, kv []any) {
	ctx := context.Background()
	if !s.h.Enabled(ctx, lvl) {
		return
	}
	var pcs [stackDepth]uintptr
	// Skip runtime.Callers, log and Info/Error; s.depth counts logr's
	// frame (Init) and klog's (WithCallDepth).
	n := runtime.Callers(3+s.depth, pcs[:])
	var caller string
	var funcs []string
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if caller == "" {
			caller = filepath.Base(f.File) + ":" + strconv.Itoa(f.Line)
		}
		funcs = append(funcs, f.Function)
		if !more {
			break
		}
	}
	subsystem := s.subsystem
	if subsystem == "" {
		subsystem = Subsystem(funcs)
	}
	r := slog.NewRecord(time.Now(), lvl, strings.TrimSuffix(msg, "\n"), pcs[0])
	r.AddAttrs(slog.String("subsystem", subsystem))
	if s.name != "" {
		r.AddAttrs(slog.String("logger", s.name))
	}
	if v > 0 {
		r.AddAttrs(slog.Int("v", v))
	}
	if err != nil {
		r.AddAttrs(slog.Any("err", err))
	}
	r.AddAttrs(attrs(kv)...)
	if caller != "" {
		r.AddAttrs(slog.String("caller", caller))
	}
	_ = s.h.Handle(ctx, r)
}

// attrs turns logr's key, value, key, value… into attributes.
func attrs(kv []any) []slog.Attr {
	var out []slog.Attr
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			k = "!BADKEY"
		}
		if i+1 == len(kv) {
			out = append(out, slog.Any("!BADKEY", kv[i]))
			break
		}
		out = append(out, slog.Any(k, kv[i+1]))
	}
	return out
}

// components maps the Go packages that belong to one component only to
// its name; a package matches with its subpackages.
var components = []struct{ pkg, name string }{
	{"k8s.io/kubernetes/cmd/kubelet", "kubelet"},
	{"k8s.io/kubernetes/pkg/kubelet", "kubelet"},
	{"k8s.io/cri-client", "kubelet"},
	{"k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy"},
	{"k8s.io/kubernetes/pkg/proxy", "kube-proxy"},
	{"k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"},
	{"k8s.io/kubernetes/pkg/scheduler", "kube-scheduler"},
	{"k8s.io/kubernetes/cmd/kube-controller-manager", "kube-controller-manager"},
	{"k8s.io/kubernetes/pkg/controller", "kube-controller-manager"},
	{"k8s.io/controller-manager", "kube-controller-manager"},
	{"k8s.io/cloud-provider", "kube-controller-manager"},
	{"k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"},
	{"k8s.io/kubernetes/pkg/controlplane", "kube-apiserver"},
	{"k8s.io/kubernetes/pkg/kubeapiserver", "kube-apiserver"},
	{"k8s.io/kubernetes/pkg/registry", "kube-apiserver"},
	{"k8s.io/kubernetes/plugin/pkg/admission", "kube-apiserver"},
	{"k8s.io/kubernetes/plugin/pkg/auth", "kube-apiserver"},
	{"k8s.io/kube-aggregator", "kube-apiserver"},
	{"k8s.io/apiextensions-apiserver", "kube-apiserver"},
	{"github.com/coredns/coredns", "coredns"},
	{"github.com/containerd/containerd", "containerd"},
}

// libraries are shared with other components but mostly the API
// server's: a line is theirs only when no component package is on the
// stack.
var libraries = []struct{ pkg, name string }{
	{"k8s.io/apiserver", "kube-apiserver"},
}

// Subsystem names the component that logged, from the functions on the
// call stack (innermost first, as runtime.Frame.Function spells them):
// the first in a component's own packages, else the first in a library
// mostly one component uses, else Unattributed.
func Subsystem(funcs []string) string {
	for _, table := range [][]struct{ pkg, name string }{components, libraries} {
		for _, fn := range funcs {
			for _, c := range table {
				if inPackage(fn, c.pkg) {
					return c.name
				}
			}
		}
	}
	return Unattributed
}

// inPackage reports whether the function fn (path/pkg.Func or
// path/pkg.(*T).M) is in pkg or below it.
func inPackage(fn, pkg string) bool {
	if !strings.HasPrefix(fn, pkg) {
		return false
	}
	rest := fn[len(pkg):]
	return rest != "" && (rest[0] == '/' || rest[0] == '.')
}
