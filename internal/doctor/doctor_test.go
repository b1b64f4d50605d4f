package doctor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/pki"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func found(fs []lint.Finding) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		m[f.ID] = true
	}
	return m
}

// TestHostChecks reads fake /proc and /etc trees under testdata: broken/
// triggers each host check that reads them, healthy/ none.
func TestHostChecks(t *testing.T) {
	ids := []string{"CL-HOST-001", "CL-HOST-002", "CL-HOST-003", "CL-HOST-006", "CL-DNS-002"}
	for _, tt := range []struct {
		root string
		want bool
	}{{"testdata/broken", true}, {"testdata/healthy", false}} {
		res, err := Run(context.Background(), Config{Root: tt.root, DataDir: t.TempDir(), FsyncSamples: 5})
		if err != nil {
			t.Fatal(err)
		}
		got := found(res.Findings)
		for _, id := range ids {
			if got[id] != tt.want {
				t.Errorf("%s: %s reported = %v, want %v (%v)", tt.root, id, got[id], tt.want, res.Findings)
			}
		}
		if tt.want && (res.Facts.SwapTotalKB != 1048572 || res.Facts.IPForward != 0 || res.Facts.ConntrackCount != 250000) {
			t.Errorf("facts %+v do not match %s", res.Facts, tt.root)
		}
	}
}

func TestCertificateExpiry(t *testing.T) {
	for _, tt := range []struct {
		validity time.Duration
		want     bool
	}{{5 * 24 * time.Hour, true}, {365 * 24 * time.Hour, false}} {
		dir := t.TempDir()
		if _, err := pki.LoadOrCreateCA(dir, "ca", "test-ca", tt.validity); err != nil {
			t.Fatal(err)
		}
		var r reporter
		certChecks(dir, &r)
		if found(r.findings)["CL-HOST-007"] != tt.want {
			t.Errorf("validity %s: CL-HOST-007 = %v, want %v", tt.validity, !tt.want, tt.want)
		}
	}
}

func TestSurge(t *testing.T) {
	node := corev1.Node{Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}}}
	dep := func(cpu string, surge int) appsv1.Deployment {
		d := appsv1.Deployment{}
		d.Name, d.Namespace = "web", "shop"
		d.Spec.Replicas = ptr.To[int32](4)
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(int32(surge)))}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}
		return d
	}
	for _, tt := range []struct {
		d    appsv1.Deployment
		want bool
	}{{dep("1500m", 2), true}, {dep("500m", 1), false}} {
		var r reporter
		surgeChecks([]appsv1.Deployment{tt.d}, nil, []corev1.Node{node}, &r)
		if found(r.findings)["CL-ROLL-001"] != tt.want {
			t.Errorf("%v: CL-ROLL-001 = %v, want %v", tt.d.Spec.Template.Spec.Containers[0].Resources.Requests, !tt.want, tt.want)
		}
	}
}

func TestClockFsyncAndSize(t *testing.T) {
	defer func(f func() bool) { clockSynced = f }(clockSynced)
	for _, tt := range []struct {
		name      string
		synced    bool
		threshold time.Duration
		big       bool
		want      bool
	}{{"all bad", false, time.Nanosecond, true, true}, {"all good", true, time.Hour, false, false}} {
		clockSynced = func() bool { return tt.synced }
		dir := t.TempDir()
		if tt.big { // a sparse 3 GiB datastore file
			os.MkdirAll(filepath.Join(dir, "datastore"), 0o700)
			f, _ := os.Create(filepath.Join(dir, "datastore", "big"))
			f.Truncate(3 << 30)
			f.Close()
		}
		res, err := Run(context.Background(), Config{Root: "testdata/healthy", DataDir: dir, FsyncSamples: 5, FsyncThreshold: tt.threshold})
		if err != nil {
			t.Fatal(err)
		}
		got := found(res.Findings)
		for _, id := range []string{"CL-HOST-004", "CL-HOST-005", "CL-DS-001"} {
			if got[id] != tt.want {
				t.Errorf("%s: %s = %v, want %v", tt.name, id, got[id], tt.want)
			}
		}
	}
}

// TestDatastoreHealth serves a fake kube-apiserver whose readyz reports
// etcd failing or ok, with empty lists for everything else.
func TestDatastoreHealth(t *testing.T) {
	for _, tt := range []struct {
		readyz string
		want   bool
	}{{"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed", true}, {"[+]ping ok\n[+]etcd ok\nreadyz check passed", false}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" {
				if tt.want {
					w.WriteHeader(http.StatusInternalServerError)
				}
				w.Write([]byte(tt.readyz))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"items":[]}`))
		}))
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "+srv.URL+"}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n"), 0o600)
		var r reporter
		if err := clusterChecks(context.Background(), Config{Kubeconfig: kc, PendingAfter: time.Minute}, &r); err != nil {
			t.Fatal(err)
		}
		if found(r.findings)["CL-DS-002"] != tt.want {
			t.Errorf("readyz %q: CL-DS-002 = %v, want %v", tt.readyz, !tt.want, tt.want)
		}
		srv.Close()
	}
}

func TestUnreachableCluster(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: https://127.0.0.1:1}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n"), 0o600)
	err := clusterChecks(context.Background(), Config{Kubeconfig: kc}, &reporter{})
	if err == nil || !strings.Contains(err.Error(), "does not answer") || !strings.Contains(err.Error(), "--host-only") {
		t.Errorf("unreachable cluster: %v, want one error naming the fix", err)
	}
}

func TestPorts(t *testing.T) {
	saved := serverPorts
	defer func() { serverPorts = saved }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	free := busy + 1
	if c, err := net.Listen("tcp", fmt.Sprintf(":%d", free)); err == nil {
		c.Close()
	} else {
		t.Skip("no free neighbour port")
	}
	// held: which lock a running process holds on the data dir.
	for _, tt := range []struct {
		name string
		port int
		node bool
		held string
		want bool
	}{
		{"busy control-plane port", busy, false, "", true},
		{"free port", free, false, "", false},
		{"busy node port, nothing running", busy, true, "", true},
		{"busy node port, a joined agent running", busy, true, "node", false},
		{"busy control-plane port, a joined agent running", busy, false, "node", true},
		{"busy control-plane port, the server running", busy, false, "server", false},
		{"busy node port, the server running", busy, true, "server", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			serverPorts = []port{{tt.port, false, tt.node, "test"}}
			dir := t.TempDir()
			switch tt.held {
			case "node":
				release, err := datadir.Of(dir).LockNode()
				if err != nil {
					t.Fatal(err)
				}
				defer release()
			case "server":
				release, err := datadir.Of(dir).LockServer()
				if err != nil {
					t.Fatal(err)
				}
				defer release()
			}
			var r reporter
			portChecks(dir, &r)
			if found(r.findings)["CL-HOST-008"] != tt.want {
				t.Errorf("port %d: CL-HOST-008 = %v, want %v", tt.port, !tt.want, tt.want)
			}
		})
	}
}

// TestPendingObjects: a LoadBalancer without an address, an old Pending
// claim and an uncapped local volume are reported; one with an address, a
// Bound claim and a capped volume not.
func TestPendingObjects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte("ok"))
		case "/api/v1/services":
			w.Write([]byte(`{"items":[
 {"metadata":{"name":"pending","namespace":"a"},"spec":{"type":"LoadBalancer"}},
 {"metadata":{"name":"served","namespace":"a"},"spec":{"type":"LoadBalancer"},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"}]}}}]}`))
		case "/api/v1/persistentvolumeclaims":
			w.Write([]byte(`{"items":[
 {"metadata":{"name":"stuck","namespace":"a","creationTimestamp":"2020-01-01T00:00:00Z"},"status":{"phase":"Pending"}},
 {"metadata":{"name":"bound","namespace":"a","creationTimestamp":"2020-01-01T00:00:00Z"},"status":{"phase":"Bound"}}]}`))
		case "/api/v1/persistentvolumes":
			w.Write([]byte(`{"items":[
 {"metadata":{"name":"pvc-open","labels":{"volumes.cloudless.dev/node":"n1"},"annotations":{"volumes.cloudless.dev/size-enforced":"false"}},"spec":{"local":{"path":"/v/pvc-open"}}},
 {"metadata":{"name":"pvc-capped","annotations":{"volumes.cloudless.dev/size-enforced":"true"}},"spec":{"local":{"path":"/v/pvc-capped"}}}]}`))
		default:
			w.Write([]byte(`{"items":[]}`))
		}
	}))
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "+srv.URL+"}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n"), 0o600)
	var r reporter
	if err := clusterChecks(context.Background(), Config{Kubeconfig: kc, PendingAfter: time.Minute}, &r); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range r.findings {
		got[f.ID+" "+f.Object] = true
	}
	for item, want := range map[string]bool{
		"CL-LB-001 Service a/pending": true, "CL-LB-001 Service a/served": false,
		"CL-PVC-001 PersistentVolumeClaim a/stuck": true, "CL-PVC-001 PersistentVolumeClaim a/bound": false,
		"CL-PVC-002 PersistentVolume pvc-open": true, "CL-PVC-002 PersistentVolume pvc-capped": false,
	} {
		if got[item] != want {
			t.Errorf("%s reported = %v, want %v", item, got[item], want)
		}
	}
}

// TestDiskBelowReserve: CL-DS-003 is an error below the reserve, a
// warning within twice of it, and absent with room or without an
// embedded engine.
func TestDiskBelowReserve(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := st.Bavail * uint64(st.Bsize)
	for _, tt := range []struct {
		name    string
		engine  bool
		reserve uint64
		want    lint.Severity
		found   bool
	}{
		{name: "below the reserve", engine: true, reserve: free * 4, want: lint.Error, found: true},
		{name: "within twice the reserve", engine: true, reserve: free * 3 / 4, want: lint.Warning, found: true},
		{name: "room", engine: true, reserve: 1},
		{name: "no embedded engine", reserve: free * 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			if tt.engine {
				seg := pebble.WALPath(filepath.Join(data, "datastore"))
				os.MkdirAll(filepath.Dir(seg), 0o700)
				if err := os.WriteFile(seg, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var r reporter
			var f Facts
			diskSpaceCheck(Config{DataDir: data, ReservedSpace: tt.reserve}, &f, &r)
			var got []lint.Finding
			for _, x := range r.findings {
				if x.ID == "CL-DS-003" {
					got = append(got, x)
				}
			}
			if len(got) > 0 != tt.found || (tt.found && got[0].Severity != tt.want) {
				t.Fatalf("CL-DS-003 findings = %+v, want found %v with severity %v", got, tt.found, tt.want)
			}
		})
	}
}

func TestPoolChecks(t *testing.T) {
	pool := func(name string, addrs ...any) unstructured.Unstructured {
		return unstructured.Unstructured{Object: map[string]any{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"name": name, "namespace": lb.Namespace}, "spec": map[string]any{"addresses": addrs}}}
	}
	gws := []netip.Addr{netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("fd00::1")}
	reserved := append(lb.ReservedCIDRs("10.42.0.0/16", "10.43.0.0/16"),
		lb.ReservedNodes([]*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.3.5"}}}}})...)
	for _, tc := range []struct {
		name  string
		pools []unstructured.Unstructured
		want  []string // IDs, in order
	}{
		{"whole LAN", []unstructured.Unstructured{pool("whole-lan", "192.168.1.0/24")}, []string{"CL-LB-006"}},
		{"range over the router", []unstructured.Unstructured{pool("range-over-router", "192.168.1.1-192.168.1.9")}, []string{"CL-LB-006"}},
		{"stops short", []unstructured.Unstructured{pool("stops-short", "192.168.1.200-192.168.1.250")}, nil},
		{"v6", []unstructured.Unstructured{pool("v6", "fd00::/120")}, []string{"CL-LB-006"}},
		{"other LAN", []unstructured.Unstructured{pool("other-lan", "192.168.2.0/24")}, nil},
		{"malformed", []unstructured.Unstructured{pool("malformed", "192.168.1.0/33")}, []string{"CL-LB-008"}},
		{"in the Service CIDR", []unstructured.Unstructured{pool("svc", "10.43.200.0/24")}, []string{"CL-LB-008"}},
		{"in the cluster CIDR", []unstructured.Unstructured{pool("pods", "10.42.0.0/24")}, []string{"CL-LB-008"}},
		{"a node's address", []unstructured.Unstructured{pool("node", "192.168.3.0/28")}, []string{"CL-LB-008"}},
		{"two overlapping pools", []unstructured.Unstructured{pool("a", "192.168.2.0/28"), pool("b", "192.168.2.8/29")}, []string{"CL-LB-008"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &reporter{}
			poolChecks(tc.pools, gws, reserved, r)
			var got []string
			for _, f := range r.findings {
				got = append(got, f.ID)
				if !strings.Contains(f.Object, "IPAddressPool") || f.Fix == "" {
					t.Errorf("finding %+v names no pool or no fix", f)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("findings %v (%v), want %v", got, r.findings, tc.want)
			}
		})
	}
}

func TestPolicyChecks(t *testing.T) {
	node := func(name string, st corev1.ConditionStatus) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: network.PolicyCondition, Status: st, Message: "nft refused"}}}}
	}
	r := &reporter{}
	policyChecks([]corev1.Node{node("ok", corev1.ConditionFalse), node("bad", corev1.ConditionTrue), {ObjectMeta: metav1.ObjectMeta{Name: "new"}}}, r)
	if len(r.findings) != 1 || r.findings[0].ID != "CL-NET-005" || r.findings[0].Object != "Node bad" || !strings.Contains(r.findings[0].Message, "nft refused") {
		t.Errorf("findings %+v, want one CL-NET-005 on Node bad with the node's message", r.findings)
	}
}
