package agent

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/cloudless-dev/cloudless/internal/network"
)

func TestCNIConfig(t *testing.T) {
	for _, tc := range []struct {
		proxyMode, backend string
	}{
		{network.ProxyNFTables, "nftables"},
		{network.ProxyIPTables, "iptables"},
		{network.ProxyIPVS, "iptables"},
	} {
		t.Run(tc.proxyMode, func(t *testing.T) {
			b, err := cniConfig("10.42.1.0/24", 1450, portmapBackend(tc.proxyMode), "/var/lib/cloudless/agent/cni/ipam")
			if err != nil {
				t.Fatal(err)
			}
			// What containerd's libcni would read.
			list, err := libcni.ConfListFromBytes(b)
			if err != nil {
				t.Fatalf("libcni rejects the conflist: %v\n%s", err, b)
			}
			if list.Name != cniNetworkName || len(list.Plugins) != len(cniPlugins) {
				t.Fatalf("conflist %q has %d plugins, want %q with %v", list.Name, len(list.Plugins), cniNetworkName, cniPlugins)
			}
			for i, p := range list.Plugins {
				if p.Network.Type != cniPlugins[i] {
					t.Errorf("plugin %d is %q, want %q", i, p.Network.Type, cniPlugins[i])
				}
			}
			var bridge struct {
				Bridge string
				MTU    int
				IPAM   struct{ Ranges [][]struct{ Subnet string } }
			}
			if err := json.Unmarshal(list.Plugins[0].Bytes, &bridge); err != nil {
				t.Fatal(err)
			}
			if bridge.Bridge != BridgeName || bridge.MTU != 1450 || bridge.IPAM.Ranges[0][0].Subnet != "10.42.1.0/24" {
				t.Errorf("bridge plugin config: %+v", bridge)
			}
			pm := list.Plugins[1]
			if !pm.Network.Capabilities["portMappings"] {
				t.Errorf("portmap does not ask for the portMappings capability, so the CRI passes no hostPorts: %s", pm.Bytes)
			}
			var portmap struct {
				Backend string
				SNAT    *bool
			}
			if err := json.Unmarshal(pm.Bytes, &portmap); err != nil {
				t.Fatal(err)
			}
			if portmap.Backend != tc.backend || portmap.SNAT == nil || !*portmap.SNAT {
				t.Errorf("portmap backend %q snat %v, want %q and snat on", portmap.Backend, portmap.SNAT, tc.backend)
			}
		})
	}
}
