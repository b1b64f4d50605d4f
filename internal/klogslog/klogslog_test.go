package klogslog

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/coredns/caddy"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/kubernetes/fake"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	kubeletutil "k8s.io/kubernetes/pkg/kubelet/util"
	proxyutil "k8s.io/kubernetes/pkg/proxy/util"

	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// setNodeOwnerFunc is called through a variable: inlined into the test,
// its closure would be named after the test (a limit of attributing by
// the stack).
var setNodeOwnerFunc = kubeletutil.SetNodeOwnerFunc

func TestSubsystem(t *testing.T) {
	tests := []struct {
		name  string
		funcs []string // innermost first
		want  string
	}{
		{name: "kubelet", funcs: []string{"k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).SyncPod", "k8s.io/kubernetes/pkg/kubelet.(*Kubelet).SyncPod"}, want: "kubelet"},
		{name: "kubelet calling a shared library", funcs: []string{"k8s.io/client-go/tools/cache.(*Reflector).ListAndWatch", "k8s.io/kubernetes/pkg/kubelet/config.NewSourceApiserver"}, want: "kubelet"},
		{name: "kubelet package spelled alike", funcs: []string{"k8s.io/kubernetes/pkg/kubeletx.F"}, want: Unattributed},
		{name: "kube-proxy", funcs: []string{"k8s.io/klog/v2.InfoS", "k8s.io/kubernetes/pkg/proxy/nftables.(*Proxier).syncProxyRules"}, want: "kube-proxy"},
		{name: "kube-scheduler", funcs: []string{"k8s.io/kubernetes/pkg/scheduler.(*Scheduler).ScheduleOne"}, want: "kube-scheduler"},
		{name: "kube-controller-manager", funcs: []string{"k8s.io/kubernetes/pkg/controller/nodeipam.(*Controller).Run"}, want: "kube-controller-manager"},
		{name: "kube-apiserver", funcs: []string{"k8s.io/kubernetes/pkg/controlplane.(*Instance).InstallAPIs"}, want: "kube-apiserver"},
		{name: "apiserver library alone", funcs: []string{"k8s.io/apiserver/pkg/server.(*GenericAPIServer).Run"}, want: "kube-apiserver"},
		{name: "apiserver library inside the scheduler", funcs: []string{"k8s.io/apiserver/pkg/server.(*SecureServingInfo).Serve", "k8s.io/kubernetes/cmd/kube-scheduler/app.Run"}, want: "kube-scheduler"},
		{name: "coredns", funcs: []string{"github.com/coredns/coredns/plugin/kubernetes.(*dnsControl).Run"}, want: "coredns"},
		{name: "an informer nobody owns", funcs: []string{"k8s.io/client-go/tools/cache.(*Reflector).watch", "k8s.io/apimachinery/pkg/util/wait.BackoffUntil"}, want: Unattributed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Subsystem(tt.funcs); got != tt.want {
				t.Errorf("Subsystem(%q) = %q, want %q", tt.funcs, got, tt.want)
			}
		})
	}
}

// recorder is a slog.Handler keeping what it is given.
type recorder struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"msg": rec.Message, "level": rec.Level.String()}
	rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, m)
	r.mu.Unlock()
	return nil
}

// find returns the last record whose message contains msg.
func (r *recorder) find(msg string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.recs) - 1; i >= 0; i-- {
		if strings.Contains(r.recs[i]["msg"], msg) {
			return r.recs[i]
		}
	}
	return nil
}

// TestRouting: klog lines logged by real upstream code reach the handler
// labelled with their component; CoreDNS's kubernetes plugin takes klog
// over when it starts, and Reclaim takes it back; a component applying
// Format installs the sink; a context logger keeps its label.
func TestRouting(t *testing.T) {
	rec := &recorder{}
	Install(rec)
	t.Cleanup(klog.ClearLogger)

	klog.InfoS("plain line", "key", "value")
	if got := rec.find("plain line"); got == nil || got["subsystem"] != Unattributed || got["key"] != "value" || !strings.HasPrefix(got["caller"], "klogslog_test.go:") {
		t.Errorf("klog.InfoS from a test = %v, want subsystem=%s, key=value and the caller klogslog_test.go", got, Unattributed)
	}

	// kube-proxy's own code, through klog's global functions.
	proxyutil.MapCIDRsByIPFamily([]string{"not-a-cidr"})
	if got := rec.find("Invalid CIDR ignored"); got == nil || got["subsystem"] != "kube-proxy" || got["level"] != "ERROR" || got["CIDR"] != "not-a-cidr" {
		t.Errorf("kube-proxy's line = %v, want subsystem=kube-proxy level=ERROR CIDR=not-a-cidr", got)
	}

	// The kubelet's own code, through klog.FromContext.
	err := setNodeOwnerFunc(context.Background(), fake.NewClientset(), "gone")(&coordinationv1.Lease{})
	if got := rec.find("Failed to get node when trying to set owner ref"); err == nil || got == nil || got["subsystem"] != "kubelet" || got["node"] != "gone" {
		t.Errorf("kubelet's line = %v (err %v), want subsystem=kubelet node=gone", got, err)
	}

	// A context logger is labelled whoever calls it.
	klog.FromContext(NewContext(context.Background(), "kube-proxy")).WithName("svc").Info("from a context", "n", 1)
	if got := rec.find("from a context"); got == nil || got["subsystem"] != "kube-proxy" || got["logger"] != "svc" || got["n"] != "1" {
		t.Errorf("context logger's line = %v, want subsystem=kube-proxy logger=svc n=1", got)
	}

	// CoreDNS's kubernetes plugin installs its own klog sink in setup,
	// before it fails here on the missing kubeconfig.
	if inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(".:0 {\n  bind 127.0.0.1\n  kubernetes cluster.local {\n    kubeconfig /nonexistent/kubeconfig\n  }\n}\n"), Filepath: "Corefile", ServerTypeName: "dns"}); err == nil {
		inst.Stop()
	}
	klog.InfoS("after CoreDNS started")
	if got := rec.find("after CoreDNS started"); got != nil {
		t.Fatalf("CoreDNS's setup did not take klog over (%v): this test no longer shows what Reclaim is for", got)
	}
	Reclaim()
	klog.InfoS("after Reclaim")
	if got := rec.find("after Reclaim"); got == nil || got["subsystem"] != Unattributed {
		t.Errorf("after Reclaim: %v, want the line back, subsystem=%s", got, Unattributed)
	}

	// The kubelet is given Format: applying it installs the sink.
	klog.ClearLogger()
	klog.InfoS("while cleared")
	cfg := logsapi.NewLoggingConfiguration()
	cfg.Format = Format
	if err := logsapi.ValidateAndApply(cfg, nil); err != nil {
		t.Fatalf("apply logging format %s: %v", Format, err)
	}
	klog.ErrorS(errors.New("boom"), "after the kubelet's logging applied")
	if got := rec.find("after the kubelet's logging applied"); got == nil || got["err"] != "boom" || got["level"] != "ERROR" {
		t.Errorf("after applying format %s: %v, want the line with err=boom", Format, got)
	}
}
