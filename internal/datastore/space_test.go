package datastore

import "testing"

func TestReserve(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	for _, tc := range []struct {
		name     string
		reserved uint64
		fsSize   uint64
		want     uint64
	}{
		{name: "big disk: the fixed amount", fsSize: 100 * gib, want: DefaultReservedSpace},
		{name: "at 2.5 GiB both agree", fsSize: 2560 * mib, want: 256 * mib},
		{name: "small disk: a tenth", fsSize: 1000 * mib, want: 100 * mib},
		{name: "set: as given, however big the disk", reserved: 24 * mib, fsSize: 100 * gib, want: 24 * mib},
		{name: "set above the cap: as given", reserved: 500 * mib, fsSize: gib, want: 500 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.ReservedSpace = tc.reserved
			if got := c.Reserve(tc.fsSize); got != tc.want {
				t.Errorf("Reserve(%d MiB) = %d MiB, want %d MiB", tc.fsSize/mib, got/mib, tc.want/mib)
			}
		})
	}
}

func TestDiskNeed(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		fsSize uint64
		fits   bool
	}{
		// What mkfs.ext4 leaves of a 200 MB and a 300 MB loop file.
		{name: "200 MB disk", fsSize: 180 * mib, fits: false},
		{name: "300 MB disk", fsSize: 270 * mib, fits: true},
		{name: "1 GiB disk", fsSize: 1000 * mib, fits: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			need, _, _ := c.diskNeed(tc.fsSize)
			if fits := tc.fsSize >= need; fits != tc.fits {
				t.Errorf("%d MiB disk, need %d MiB: fits = %v, want %v", tc.fsSize/mib, need/mib, fits, tc.fits)
			}
		})
	}
}
