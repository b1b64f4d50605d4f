package dns

import (
	"sort"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// Builder turns zone ConfigMaps and Services into zones, keeping each
// ConfigMap's last text that parsed: a bad edit gets an event and the
// zone keeps its last good records.
type Builder struct {
	lastGood map[string][]zone.Record // ConfigMap namespace/name → records
}

// NewBuilder makes a Builder with no history.
func NewBuilder() *Builder { return &Builder{lastGood: map[string][]zone.Record{}} }

// Build returns the zones by origin and the problems to report.
func (b *Builder) Build(cms []*corev1.ConfigMap, services []*corev1.Service) (map[string]*zone.Zone, []zone.Problem) {
	var problems []zone.Problem
	static := map[string][]zone.Record{}
	sort.Slice(cms, func(i, j int) bool { return cms[i].Namespace+"/"+cms[i].Name < cms[j].Namespace+"/"+cms[j].Name })
	seen := map[string]bool{}
	for _, cm := range cms {
		if cm.Name == SerialsConfigMap {
			continue
		}
		key := cm.Namespace + "/" + cm.Name
		seen[key] = true
		ref := Ref("ConfigMap", cm.Namespace, cm.Name)
		origin, text, err := ZoneText(cm)
		var recs []zone.Record
		if err == nil {
			recs, err = zone.Parse(origin, text, ref)
		}
		if err != nil {
			problems = append(problems, zone.Problem{Ref: ref, Reason: zone.ReasonInvalidZone, Message: err.Error() + keptMessage(b.lastGood[key] != nil)})
			recs = b.lastGood[key]
			if recs == nil {
				continue
			}
		} else {
			b.lastGood[key] = recs
		}
		for _, r := range recs { // the origin is the SOA's owner, which Parse checked
			if r.RR.Header().Rrtype == dns.TypeSOA {
				origin = r.RR.Header().Name
			}
		}
		if _, dup := static[origin]; dup {
			problems = append(problems, zone.Problem{Ref: ref, Reason: zone.ReasonConflict,
				Message: "zone " + origin + " is declared by another ConfigMap too (the first by name is served): keep one"})
			continue
		}
		static[origin] = recs
	}
	for k := range b.lastGood {
		if !seen[k] {
			delete(b.lastGood, k)
		}
	}
	var claims []zone.Claim
	for _, svc := range services {
		c, p := ServiceClaims(svc)
		claims, problems = append(claims, c...), append(problems, p...)
	}
	zones, p := zone.Build(static, claims)
	return zones, append(problems, p...)
}

func keptMessage(kept bool) string {
	if kept {
		return "; the zone's last good text is still served"
	}
	return "; the zone is not served until it parses"
}
