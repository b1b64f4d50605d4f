// Package clusterinfo encodes and decodes kube-public/cluster-info, the
// one object anyone may read: what a joining machine learns from a server
// before it trusts it (the CA, checked against the token's hash, and the
// server's address), and the network settings every node shares. The
// server writes it, agents and doctor read it; its keys are spelled here
// only.
//
// It imports client-go's API types and clientcmd; controlplane, agent
// and doctor import it.
package clusterinfo

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Name and Namespace of the ConfigMap.
const (
	Name      = "cluster-info"
	Namespace = metav1.NamespacePublic
)

// The ConfigMap's keys. KeyKubeconfig is upstream's (kubeadm's
// bootstrap-token discovery reads the same key).
const (
	KeyKubeconfig     = "kubeconfig"
	keyClusterDNS     = "clusterDNS"
	keyClusterDomain  = "clusterDomain"
	keyClusterCIDR    = "clusterCIDR"
	keyServiceCIDR    = "serviceCIDR"
	keyNetworkBackend = "networkBackend"
	keyProxyMode      = "proxyMode"
	keyDisabled       = "disabled"
)

// clusterName names the one cluster in the kubeconfig.
const clusterName = "cloudless"

// Info is what cluster-info says.
type Info struct {
	// Server is a server's URL; CAPEM the cluster CA.
	Server string
	CAPEM  []byte
	// The cluster's DNS and network settings, which every node shares.
	ClusterDNS, ClusterDomain                           string
	ClusterCIDR, ServiceCIDR, NetworkBackend, ProxyMode string
	// Disabled lists the server components turned off (server --disable),
	// so that agents leave their node-side parts off too.
	Disabled []string
}

// ConfigMap encodes i.
func (i Info) ConfigMap() (*corev1.ConfigMap, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[clusterName] = &clientcmdapi.Cluster{Server: i.Server, CertificateAuthorityData: i.CAPEM}
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("cluster-info kubeconfig: %w", err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: Namespace},
		Data: map[string]string{KeyKubeconfig: string(b), keyClusterDNS: i.ClusterDNS, keyClusterDomain: i.ClusterDomain,
			keyClusterCIDR: i.ClusterCIDR, keyServiceCIDR: i.ServiceCIDR, keyNetworkBackend: i.NetworkBackend, keyProxyMode: i.ProxyMode,
			keyDisabled: strings.Join(i.Disabled, ",")}}, nil
}

// Parse decodes a cluster-info ConfigMap's data.
func Parse(data map[string]string) (Info, error) {
	kc, err := clientcmd.Load([]byte(data[KeyKubeconfig]))
	if err != nil {
		return Info{}, fmt.Errorf("cluster-info kubeconfig: %w", err)
	}
	names := make([]string, 0, len(kc.Clusters))
	for n := range kc.Clusters {
		names = append(names, n)
	}
	if len(names) == 0 {
		return Info{}, fmt.Errorf("cluster-info has no cluster")
	}
	slices.Sort(names) // one cluster is written; any other is read the same way every time
	c := kc.Clusters[names[0]]
	i := Info{Server: c.Server, CAPEM: c.CertificateAuthorityData, ClusterDNS: data[keyClusterDNS], ClusterDomain: data[keyClusterDomain],
		ClusterCIDR: data[keyClusterCIDR], ServiceCIDR: data[keyServiceCIDR], NetworkBackend: data[keyNetworkBackend], ProxyMode: data[keyProxyMode]}
	if d := data[keyDisabled]; d != "" {
		i.Disabled = strings.Split(d, ",")
	}
	return i, nil
}
