package dns

import (
	"cmp"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// Names every part of Cloudless (and its users) use for the
// authoritative DNS.
const (
	// ZoneLabel marks a ConfigMap in kube-system as a zone: data key
	// ZoneOriginKey names the zone, ZoneTextKey holds its RFC 1035 text.
	// kube-system, so that only cluster admins declare zones.
	ZoneLabel     = "dns.cloudless.dev/zone"
	ZoneOriginKey = "origin"
	ZoneTextKey   = "zone"
	// SerialsConfigMap (kube-system) holds, per zone, the serial the
	// elected writer gave the zone's current content and that content's
	// hash: "<serial> <hash>".
	SerialsConfigMap = "cloudless-dns-serials"
	// Lease is the writer's election (kube-system).
	Lease = "cloudless-dns"
	// Component signs the events.
	Component = "cloudless-dns"
	// DefaultTTL is a generated record's TTL without a ttl annotation:
	// short, as addresses move.
	DefaultTTL = 60
)

// Annotation prefixes external-dns reads: the one before 0.22 and the one
// since. Both are read, so that Services written for either work.
var annotationPrefixes = []string{"external-dns.alpha.kubernetes.io/", "external-dns.kubernetes.io/"}

// Event reasons of the sources (the zone package has its own).
const (
	ReasonInvalidHostname = "InvalidHostname"
	ReasonInvalidTarget   = "InvalidTarget"
	ReasonInvalidTTL      = "InvalidTTL"
)

// annotation reads key under either prefix; the newer wins when both
// are set.
func annotation(a map[string]string, key string) (string, bool) {
	for i := len(annotationPrefixes) - 1; i >= 0; i-- {
		if v, ok := a[annotationPrefixes[i]+key]; ok {
			return v, true
		}
	}
	return "", false
}

// Ref is how records and events name an object.
func Ref(kind, namespace, name string) string { return kind + " " + namespace + "/" + name }

// ServiceClaims are the records an annotated LoadBalancer Service asks
// for: its hostnames (comma-separated) pointing at its load-balancer
// addresses, or at the target annotation's addresses or name.
func ServiceClaims(svc *corev1.Service) ([]zone.Claim, []zone.Problem) {
	hosts, ok := annotation(svc.Annotations, "hostname")
	if !ok || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return nil, nil
	}
	var targets []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		targets = append(targets, cmp.Or(in.IP, in.Hostname))
	}
	return claimsFor("Service", svc.ObjectMeta, splitList(hosts), targets)
}

// ttlOf reads an object's ttl annotation (seconds), DefaultTTL without
// one.
func ttlOf(ref string, annotations map[string]string) (uint32, []zone.Problem) {
	v, ok := annotation(annotations, "ttl")
	if !ok {
		return DefaultTTL, nil
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), "s"), 10, 31)
	if err != nil || n == 0 {
		return DefaultTTL, []zone.Problem{{Ref: ref, Reason: ReasonInvalidTTL,
			Message: fmt.Sprintf("ttl %q is not a number of seconds: using %d", v, DefaultTTL)}}
	}
	return uint32(n), nil
}

// targetRecords makes A and AAAA records of addresses, or one CNAME of a
// single name; anything else is an error naming the target.
func targetRecords(targets []string, ttl uint32) ([]dns.RR, error) {
	var rrs []dns.RR
	var names []string
	for _, t := range targets {
		if a, err := netip.ParseAddr(t); err == nil {
			hdr := dns.RR_Header{Class: dns.ClassINET, Ttl: ttl}
			if a.Is4() || a.Is4In6() {
				hdr.Rrtype = dns.TypeA
				rrs = append(rrs, &dns.A{Hdr: hdr, A: a.Unmap().AsSlice()})
			} else {
				hdr.Rrtype = dns.TypeAAAA
				rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
			continue
		}
		name, err := hostname(t)
		if err != nil {
			return nil, fmt.Errorf("target %q is neither an address nor a host name", t)
		}
		names = append(names, name)
	}
	switch {
	case len(names) > 1 || len(names) == 1 && len(rrs) > 0:
		return nil, fmt.Errorf("targets %s: a name can alias one host name (CNAME), or hold addresses, not both", strings.Join(targets, ","))
	case len(names) == 1:
		rrs = append(rrs, &dns.CNAME{Hdr: dns.RR_Header{Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: names[0]})
	}
	sort.Slice(rrs, func(i, j int) bool { return rrs[i].String() < rrs[j].String() })
	return rrs, nil
}

// hostname checks a host name (a leading "*." for a wildcard allowed)
// and returns it fully qualified, lower case.
func hostname(h string) (string, error) {
	h = strings.TrimSpace(h)
	n := strings.TrimSuffix(strings.TrimPrefix(h, "*."), ".")
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("hostname %q is not a DNS name", h)
	}
	for _, l := range strings.Split(n, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("hostname %q is not a DNS name: labels are 1 to 63 letters, digits and inner hyphens", h)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("hostname %q is not a DNS name: %q is not allowed", h, c)
			}
		}
	}
	return dns.CanonicalName(h), nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ZoneText returns a zone ConfigMap's origin and text, or an error for
// its event.
func ZoneText(cm *corev1.ConfigMap) (origin, text string, err error) {
	origin, text = strings.TrimSpace(cm.Data[ZoneOriginKey]), cm.Data[ZoneTextKey]
	if origin == "" || text == "" {
		return "", "", fmt.Errorf("ConfigMap %s/%s is labelled %s but lacks data keys %q (the zone's name) and %q (its RFC 1035 text)",
			cm.Namespace, cm.Name, ZoneLabel, ZoneOriginKey, ZoneTextKey)
	}
	return dns.CanonicalName(origin), text, nil
}

// Recorded reads the serials ConfigMap: origin → serial and hash.
func Recorded(cm *corev1.ConfigMap) map[string]Record {
	out := map[string]Record{}
	if cm == nil {
		return out
	}
	for k, v := range cm.Data {
		f := strings.Fields(v)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			continue
		}
		out[keyOrigin(k)] = Record{Serial: uint32(n), Hash: f[1]}
	}
	return out
}

// Record is a zone's recorded serial and the hash of the content it was
// given to.
type Record struct {
	Serial uint32
	Hash   string
}

func (r Record) String() string { return fmt.Sprintf("%d %s", r.Serial, r.Hash) }

// originKey and keyOrigin map an origin to a ConfigMap data key, which
// may not end in a dot: "example.com." ↔ "example.com".
func OriginKey(origin string) string { return strings.TrimSuffix(origin, ".") }
func keyOrigin(k string) string      { return dns.Fqdn(strings.ToLower(k)) }
