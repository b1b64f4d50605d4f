package clusterinfo

import (
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Info
	}{
		{name: "full", in: Info{Server: "https://192.0.2.1:6443", CAPEM: []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
			ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16",
			NetworkBackend: "vxlan", ProxyMode: "nftables", Disabled: []string{"metrics", "local-storage"}}},
		{name: "nothing disabled", in: Info{Server: "https://[2001:db8::1]:6443", CAPEM: []byte("ca"), ClusterCIDR: "10.42.0.0/16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm, err := tc.in.ConfigMap()
			if err != nil {
				t.Fatal(err)
			}
			if cm.Name != Name || cm.Namespace != Namespace {
				t.Errorf("ConfigMap %s/%s, want %s/%s", cm.Namespace, cm.Name, Namespace, Name)
			}
			got, err := Parse(cm.Data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.in) {
				t.Errorf("Parse(ConfigMap(%+v)) = %+v", tc.in, got)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		data map[string]string
		want string
	}{
		{name: "no kubeconfig", data: map[string]string{}, want: "no cluster"},
		{name: "broken kubeconfig", data: map[string]string{KeyKubeconfig: "{"}, want: "cluster-info kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
