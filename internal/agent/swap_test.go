package agent

import "testing"

func TestSwapError(t *testing.T) {
	const header = "Filename\tType\tSize\tUsed\tPriority\n"
	const on = header + "/swapfile file 1048572 0 -2\n"
	for _, tc := range []struct {
		name  string
		swaps string
		args  []string
		fail  bool
	}{
		{"no swap", header, nil, false},
		{"swap on", on, nil, true},
		{"swap on, other kubelet args", on, []string{"--v=2"}, true},
		{"swap on, accepted", on, []string{"--fail-swap-on=false"}, false},
		{"swap on, accepted in two words", on, []string{"--fail-swap-on", "false"}, false},
		{"swap on, failing kept", on, []string{"--fail-swap-on=true"}, true},
	} {
		if err := swapError(tc.swaps, tc.args); (err != nil) != tc.fail {
			t.Errorf("%s: %v, want failure %v", tc.name, err, tc.fail)
		}
	}
}
