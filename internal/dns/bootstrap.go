package dns

// Zones from the server's configuration (--dns-zone ORIGIN=FILE): read
// and checked when the server starts, then kept as labelled ConfigMaps
// like any other zone, applied again at every start, so the file stays
// their source.

import (
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// ZoneSourceAnnotation names the file a configured zone's ConfigMap
// was made from.
const ZoneSourceAnnotation = "dns.cloudless.dev/source"

// ConfigZone reads one --dns-zone value, ORIGIN=FILE, and returns the
// zone's ConfigMap; the error names the file and line, and the fix.
func ConfigZone(flag string) (*corev1.ConfigMap, error) {
	origin, path, ok := strings.Cut(flag, "=")
	if !ok || origin == "" || path == "" {
		return nil, fmt.Errorf("--dns-zone %q: want ORIGIN=FILE, e.g. example.com=/etc/cloudless/example.com.zone", flag)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--dns-zone %s: %w", origin, err)
	}
	if _, err := zone.Parse(origin, string(text), path); err != nil {
		return nil, fmt.Errorf("--dns-zone %s: %w", origin, err)
	}
	key := OriginKey(strings.ToLower(strings.TrimSuffix(origin, ".")))
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "zone-" + strings.ReplaceAll(key, ".", "-"), Namespace: metav1.NamespaceSystem,
			Labels:      map[string]string{ZoneLabel: "config"},
			Annotations: map[string]string{ZoneSourceAnnotation: path}},
		Data: map[string]string{ZoneOriginKey: key, ZoneTextKey: string(text)},
	}, nil
}
