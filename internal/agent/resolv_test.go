package agent

import (
	"os"
	"slices"
	"testing"
)

func TestUpstreamNameservers(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"testdata/resolv-stub.conf", nil}, // systemd-resolved's stub only
		{"testdata/resolv-upstream.conf", []string{"192.0.2.53", "2001:db8::53", "198.51.100.53"}}, // no loopback, at most 3
		{"testdata/resolv-bad.conf", nil},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := upstreamNameservers(b); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.file, got, tt.want)
		}
	}
}
