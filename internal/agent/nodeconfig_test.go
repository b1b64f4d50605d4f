package agent

import (
	"strings"
	"testing"
)

func TestNodeConfigComplete(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*NodeConfig)
		wantErr string
	}{
		{name: "defaults with a name", edit: func(n *NodeConfig) { n.NodeName = "node-a" }},
		{name: "hostname default", edit: func(n *NodeConfig) {}},
		{name: "bad name", edit: func(n *NodeConfig) { n.NodeName = "Node_A" }, wantErr: "give --node-name"},
		{name: "bad IP", edit: func(n *NodeConfig) { n.NodeName, n.NodeIP = "a", "10.0.0" }, wantErr: "--node-ip"},
		{name: "label", edit: func(n *NodeConfig) { n.NodeName, n.NodeLabels = "a", []string{"zone=rack-1"} }},
		{name: "bad label", edit: func(n *NodeConfig) { n.NodeName, n.NodeLabels = "a", []string{"zone"} }, wantErr: "--node-label"},
		{name: "taint", edit: func(n *NodeConfig) { n.NodeName, n.NodeTaints = "a", []string{"gpu=true:NoSchedule"} }},
		{name: "bad taint effect", edit: func(n *NodeConfig) { n.NodeName, n.NodeTaints = "a", []string{"gpu=true:Never"} }, wantErr: "effect must be"},
		{name: "refresh too short", edit: func(n *NodeConfig) { n.NodeName, n.LBARPRefresh = "a", 1 }, wantErr: "--lb-arp-refresh"},
		{name: "bad detection", edit: func(n *NodeConfig) { n.NodeName, n.LBFailureDetection = "a", "slow" }, wantErr: "slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := DefaultNodeConfig()
			tc.edit(&n)
			err := n.Complete()
			if tc.wantErr == "" && (err != nil || n.NodeName == "") {
				t.Fatalf("Complete = %v, name %q", err, n.NodeName)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Complete = %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}
