package dns

import "testing"

func TestReplicaAddr(t *testing.T) {
	for _, tc := range []struct{ listen, advertise, want string }{
		{":53", "192.0.2.10", "192.0.2.10:53"},
		{"0.0.0.0:5353", "192.0.2.10", "192.0.2.10:5353"},
		{"[::]:53", "2001:db8::10", "[2001:db8::10]:53"},
		{"198.51.100.1:53", "192.0.2.10", "198.51.100.1:53"},
		{"127.0.0.1:10053", "192.0.2.10", "127.0.0.1:10053"},
	} {
		if got := ReplicaAddr(tc.listen, tc.advertise); got != tc.want {
			t.Errorf("ReplicaAddr(%q, %q) = %q, want %q", tc.listen, tc.advertise, got, tc.want)
		}
	}
}
