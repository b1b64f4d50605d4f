package dns

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ReplicasConfigMap (kube-system) lists the servers that answer DNS:
// data key the server's node name, value the host:port it answers on.
// Each server writes its own key at start (server-side apply, one field
// manager per server); `cloudless dns check` and doctor ask them all.
// A server removed for good leaves its key: delete it by hand.
const ReplicasConfigMap = "cloudless-dns-replicas"

// Replica is one server answering DNS.
type Replica struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// ReplicaAddr is where a server with --dns-listen listen is reached:
// listen itself, or, when its host is unspecified (":53",
// "0.0.0.0:53"), the server's advertised address with listen's port.
func ReplicaAddr(listen, advertise string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = advertise
	}
	return net.JoinHostPort(host, port)
}

// Replicas reads the registry, sorted by name.
func Replicas(cm *corev1.ConfigMap) []Replica {
	var out []Replica
	if cm == nil {
		return nil
	}
	for name, addr := range cm.Data {
		if addr = strings.TrimSpace(addr); addr != "" {
			out = append(out, Replica{Name: name, Addr: addr})
		}
	}
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.Name, b.Name) })
	return out
}
