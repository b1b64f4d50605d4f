// Package lb gives LoadBalancer Services an address on bare metal. It
// speaks MetalLB's API unchanged (the metallb.io resources and the
// Service annotations, both prefixes), so an operator's existing MetalLB
// manifests work as they are.
//
// This package holds what the address allocation decides, with no API
// calls: the metallb.io types (api.go) and their CRDs (crds.go), address
// pools (pool.go), and the allocator with MetalLB's sharing rules
// (alloc.go). The controller that runs it against the API is
// internal/controllers/loadbalancer.go; the server installs the CRDs.
package lb

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Group is MetalLB's API group.
const Group = "metallb.io"

// Service annotations, under both MetalLB prefixes: AnnotationPrefix, and
// the older DeprecatedPrefix (still honoured, with a deprecation event).
const (
	AnnotationPrefix  = "metallb.io/"
	DeprecatedPrefix  = "metallb.universe.tf/"
	LoadBalancerIPs   = "loadBalancerIPs"        // comma-separated addresses wanted
	AddressPool       = "address-pool"           // the pool to allocate from
	AllowSharedIP     = "allow-shared-ip"        // the sharing key
	AllocatedFromPool = "ip-allocated-from-pool" // written: the pool an address came from
)

// ConditionAllocated is the Service condition that says whether its
// address was allocated, and if not, why (a Reason* below).
const ConditionAllocated = "cloudless.dev/LoadBalancerAllocated"

// Reasons, on the condition and on the Service's events.
const (
	ReasonAllocated   = "Allocated"
	ReasonNoPool      = "NoPoolMatches"
	ReasonExhausted   = "PoolExhausted"
	ReasonUnavailable = "AddressUnavailable" // outside every pool, or taken
	ReasonSharing     = "SharingRefused"
	ReasonInvalid     = "InvalidRequest"
	ReasonDeprecated  = "DeprecatedAnnotation"
)

// Namespace is where the metallb.io resources are read from, as MetalLB
// reads them; the server creates it.
const Namespace = "metallb-system"

// Annotation returns the MetalLB annotation name from annotations, under
// AnnotationPrefix or else DeprecatedPrefix, with the key it was found
// under ("" if absent).
func Annotation(annotations map[string]string, name string) (value, key string) {
	for _, p := range []string{AnnotationPrefix, DeprecatedPrefix} {
		if v, ok := annotations[p+name]; ok {
			return v, p + name
		}
	}
	return "", ""
}

// The speakers' events on a Service, saying which node announces it: the
// source's host is the node; the L2 message names the addresses and the
// interfaces ("node-b announces 192.0.2.10 on eth0 by ARP").
const (
	SpeakerComponent    = "cloudless-lb-speaker"
	ReasonAnnouncingL2  = "AnnouncingL2"
	ReasonAnnouncingBGP = "AnnouncingBGP"
	// ReasonWithdrawnBGP: the node stopped advertising the Service.
	ReasonWithdrawnBGP = "WithdrawnBGP"
)

// EventTime is when an event last happened: its last timestamp (legacy
// recorders), else its event time, else when it was created.
func EventTime(e *corev1.Event) time.Time {
	for _, t := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time} {
		if !t.IsZero() {
			return t
		}
	}
	return e.CreationTimestamp.Time
}
