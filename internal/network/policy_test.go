package network

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/kubernetes/scheme"
	listersv1 "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

var update = flag.Bool("update", false, "rewrite the .golden files")

// TestPolicyRules turns each testdata/policy/*.yaml (namespaces, pods and
// policies; pods on node "n1" are local) into the rules for node n1 and
// compares them with the .golden file next to it.
func TestPolicyRules(t *testing.T) {
	cases, _ := filepath.Glob("testdata/policy/*.yaml")
	if len(cases) == 0 {
		t.Fatal("no test cases")
	}
	for _, file := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			pc := controllerFrom(t, file)
			rs, err := pc.rules()
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for _, d := range []struct {
				name string
				pods []podRules
			}{{"ingress", rs.ingress}, {"egress", rs.egress}} {
				for _, p := range d.pods {
					got.WriteString(d.name + " " + p.ip + ":\n")
					for _, r := range p.allow {
						got.WriteString("  " + r + "\n")
					}
				}
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				os.WriteFile(golden, got.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != string(want) {
				t.Errorf("rules differ from %s:\ngot:\n%s\nwant:\n%s", golden, got.String(), want)
			}
		})
	}
}

func controllerFrom(t *testing.T, file string) *policyController {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nss := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	pols := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch o := obj.(type) {
		case *corev1.Pod:
			pods.Add(o)
		case *corev1.Namespace:
			nss.Add(o)
		case *corev1.Node:
			nodes.Add(o)
		case *networkingv1.NetworkPolicy:
			pols.Add(o)
		}
	}
	return &policyController{node: "n1", pods: listersv1.NewPodLister(pods), nss: listersv1.NewNamespaceLister(nss),
		nodes: listersv1.NewNodeLister(nodes), policies: netlisters.NewNetworkPolicyLister(pols)}
}

func TestPolicyTypes(t *testing.T) {
	tests := []struct {
		name        string
		spec        networkingv1.NetworkPolicySpec
		ingress, eg bool
	}{
		{"no types, no egress rules: ingress only", networkingv1.NetworkPolicySpec{}, true, false},
		{"no types, egress rules: both", networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}}, true, true},
		{"egress only", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}, false, true},
	}
	for _, tt := range tests {
		in, eg := policyTypes(&networkingv1.NetworkPolicy{Spec: tt.spec})
		if in != tt.ingress || eg != tt.eg {
			t.Errorf("%s: got ingress %v egress %v", tt.name, in, eg)
		}
	}
}
