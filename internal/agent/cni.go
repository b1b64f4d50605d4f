package agent

// The node's CNI network: the bridge plugin (with host-local IPAM) for the
// pod's interface, then portmap for the pods' hostPorts. The plugins' own
// config types live in their main packages, which cannot be imported, so
// the fields used here are typed below, with the JSON names the CNI spec
// and each plugin document, and serialised with encoding/json.

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/network"
)

// cniVersion is the CNI spec version of the conflist.
const cniVersion = "1.0.0"

// cniNetworkName names the network in the conflist and in containerd's
// CNI results.
const cniNetworkName = "cloudless"

// cniPlugins are the CNI plugins the node runs, in chain order; `make
// build` puts each under <helpers>/cni/.
var cniPlugins = []string{"bridge", "portmap"}

// cniHelpers are the CNI binaries the node needs: the chain's plugins,
// the IPAM plugin and the loopback plugin containerd runs for every pod.
var cniHelpers = append([]string{"host-local", "loopback"}, cniPlugins...)

type cniConfList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type cniBridge struct {
	Type        string  `json:"type"`
	Bridge      string  `json:"bridge"`
	IsGateway   bool    `json:"isGateway"`
	IPMasq      bool    `json:"ipMasq"`
	HairpinMode bool    `json:"hairpinMode"`
	MTU         int     `json:"mtu"`
	IPAM        cniIPAM `json:"ipam"`
}

type cniIPAM struct {
	Type    string       `json:"type"`
	Ranges  [][]cniRange `json:"ranges"`
	Routes  []cniRoute   `json:"routes"`
	DataDir string       `json:"dataDir"`
}

type cniRange struct {
	Subnet string `json:"subnet"`
}

type cniRoute struct {
	Dst string `json:"dst"`
}

// cniPortmap maps a pod's hostPorts (the CRI passes them as the
// portMappings capability) to the pod, with DNAT rules in the same
// packet-filter framework as the Service proxy, and masquerades
// hairpin and localhost connections so that replies find their way back.
type cniPortmap struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	Backend      string          `json:"backend"`
	SNAT         bool            `json:"snat"`
}

// Where portmap keeps its rules (its own names, not configurable): the
// node records them so that `cloudless reset` removes them.
const (
	portmapNFTable      = "cni_hostport"
	portmapDNATChain    = "CNI-HOSTPORT-DNAT"
	portmapMasqChain    = "CNI-HOSTPORT-MASQ"
	portmapSetMarkChain = "CNI-HOSTPORT-SETMARK"
)

// portmapBackend is the packet filter portmap writes to: nftables with
// the nftables Service proxy, iptables otherwise, so that one node never
// needs both.
func portmapBackend(proxyMode string) string {
	if proxyMode == network.ProxyNFTables {
		return "nftables"
	}
	return "iptables"
}

// portmapFootprint adds the tables or chains portmap creates with backend.
func portmapFootprint(backend string) func(*footprint.Record) {
	return func(r *footprint.Record) {
		if backend == "nftables" {
			r.NFTables = append(r.NFTables, footprint.NFTable{Family: "ip", Name: portmapNFTable}, footprint.NFTable{Family: "ip6", Name: portmapNFTable})
			return
		}
		r.IPTables = append(r.IPTables,
			footprint.IPTChain{Table: "nat", Chain: portmapDNATChain, From: "PREROUTING"},
			footprint.IPTChain{Table: "nat", Chain: portmapDNATChain, From: "OUTPUT"},
			footprint.IPTChain{Table: "nat", Chain: portmapMasqChain, From: "POSTROUTING"},
			footprint.IPTChain{Table: "nat", Chain: portmapSetMarkChain})
	}
}

// cniConfig returns the node's conflist for podCIDR, with portmap on
// backend.
func cniConfig(podCIDR string, mtu int, backend, ipamDir string) ([]byte, error) {
	conf := cniConfList{
		CNIVersion: cniVersion,
		Name:       cniNetworkName,
		Plugins: []any{
			cniBridge{
				Type: "bridge", Bridge: BridgeName, IsGateway: true, HairpinMode: true, MTU: mtu,
				IPAM: cniIPAM{
					Type:    "host-local",
					Ranges:  [][]cniRange{{{Subnet: podCIDR}}},
					Routes:  []cniRoute{{Dst: "0.0.0.0/0"}},
					DataDir: ipamDir,
				},
			},
			cniPortmap{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}, Backend: backend, SNAT: true},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("CNI config: %w", err)
	}
	return append(b, '\n'), nil
}

// cniConfFile is where containerd reads the node's conflist.
func (p paths) cniConfFile() string { return filepath.Join(p.cniConfDir(), "10-cloudless.conflist") }

// cniIPAMDir is where host-local records the pod addresses it hands out.
func (p paths) cniIPAMDir() string { return filepath.Join(p.root, "cni", "ipam") }
