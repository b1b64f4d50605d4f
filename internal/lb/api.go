package lb

// The metallb.io resources, as MetalLB publishes them (v1beta1, and
// v1beta2 for BGPPeer): the fields Cloudless reads. The CRDs keep unknown
// fields (crds.go), so a manifest with fields not listed here applies
// unchanged and round-trips.

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAddressPool is a set of addresses Services may be given.
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPAddressPoolSpec `json:"spec"`
}

type IPAddressPoolSpec struct {
	// Addresses are CIDRs (192.168.10.0/24) or ranges
	// (192.168.10.10-192.168.10.20).
	Addresses []string `json:"addresses"`
	// AutoAssign false: only Services that ask for this pool or one of
	// its addresses get one. Default true.
	AutoAssign *bool `json:"autoAssign,omitempty"`
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255.
	AvoidBuggyIPs     bool               `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation narrows a pool to some Services, and orders pools.
type ServiceAllocation struct {
	// Priority orders the pools that match: lower first; pools with no
	// serviceAllocation come after all those with one.
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// L2Advertisement announces pools' addresses with ARP and NDP.
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              L2AdvertisementSpec `json:"spec,omitempty"`
}

type L2AdvertisementSpec struct {
	// IPAddressPools and IPAddressPoolSelectors choose the pools; with
	// neither, every pool.
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Interfaces             []string               `json:"interfaces,omitempty"`
}

// BGPAdvertisement announces pools' addresses to BGP peers.
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPAdvertisementSpec `json:"spec,omitempty"`
}

type BGPAdvertisementSpec struct {
	AggregationLength      *int32                 `json:"aggregationLength,omitempty"`
	AggregationLengthV6    *int32                 `json:"aggregationLengthV6,omitempty"`
	LocalPref              uint32                 `json:"localPref,omitempty"`
	Communities            []string               `json:"communities,omitempty"`
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Peers                  []string               `json:"peers,omitempty"`
}

// BGPPeer is a router to peer with (v1beta2; v1beta1 is still served).
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPPeerSpec `json:"spec"`
}

type BGPPeerSpec struct {
	MyASN          uint32                 `json:"myASN"`
	PeerASN        uint32                 `json:"peerASN,omitempty"`
	PeerAddress    string                 `json:"peerAddress,omitempty"`
	SourceAddress  string                 `json:"sourceAddress,omitempty"`
	PeerPort       uint16                 `json:"peerPort,omitempty"`
	HoldTime       *metav1.Duration       `json:"holdTime,omitempty"`
	KeepaliveTime  *metav1.Duration       `json:"keepaliveTime,omitempty"`
	ConnectTime    *metav1.Duration       `json:"connectTime,omitempty"`
	RouterID       string                 `json:"routerID,omitempty"`
	NodeSelectors  []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Password       string                 `json:"password,omitempty"`
	PasswordSecret corev1.SecretReference `json:"passwordSecret,omitempty"`
	BFDProfile     string                 `json:"bfdProfile,omitempty"`
	EBGPMultiHop   bool                   `json:"ebgpMultiHop,omitempty"`
	VRFName        string                 `json:"vrf,omitempty"`
	DynamicASN     string                 `json:"dynamicASN,omitempty"`
	Interface      string                 `json:"interface,omitempty"`
}

// Community names BGP community values for BGPAdvertisements.
type Community struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              CommunitySpec `json:"spec,omitempty"`
}

type CommunitySpec struct {
	Communities []CommunityAlias `json:"communities,omitempty"`
}

type CommunityAlias struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}
