package cli

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestConfigure(t *testing.T) {
	logger := func() (*slog.Logger, error) { return slog.New(slog.NewTextHandler(io.Discard, nil)), nil }
	tests := []struct {
		name    string
		cmd     func() *cobra.Command
		strict  bool
		args    []string
		env     map[string]string
		want    map[string]string // flag -> value after configure
		wantErr string
	}{
		{
			name: "file fills flags, lists included",
			args: []string{"--config", "testdata/server.yaml"},
			want: map[string]string{"data-dir": "/srv/cloudless", "https-listen-port": "7443", "tls-san": "[k8s.example.net,192.0.2.10]", "kube-apiserver-arg": "[--v=2]", "cert-validity": "2160h0m0s"},
		},
		{
			name: "flag beats env beats file",
			args: []string{"--config", "testdata/server.yaml", "--data-dir", "/flag"},
			env:  map[string]string{"CLOUDLESS_DATA_DIR": "/env", "CLOUDLESS_HTTPS_LISTEN_PORT": "8443"},
			want: map[string]string{"data-dir": "/flag", "https-listen-port": "8443", "tls-san": "[k8s.example.net,192.0.2.10]"},
		},
		{
			name: "config path from CLOUDLESS_CONFIG",
			env:  map[string]string{"CLOUDLESS_CONFIG": "testdata/server.yaml"},
			want: map[string]string{"data-dir": "/srv/cloudless"},
		},
		{name: "unknown key names the key", args: []string{"--config", "testdata/unknown.yaml"}, wantErr: `unknown key "cluster-cdir"`},
		{name: "list for a scalar flag", args: []string{"--config", "testdata/list-for-scalar.yaml"}, wantErr: `key "data-dir": takes one value, not a list`},
		{name: "not a map", args: []string{"--config", "testdata/not-a-map.yaml"}, wantErr: "not a YAML map"},
		{name: "explicit missing file", args: []string{"--config", "testdata/absent.yaml"}, wantErr: "absent.yaml: no such file"},
		{name: "bad env value", env: map[string]string{"CLOUDLESS_HTTPS_LISTEN_PORT": "x"}, args: []string{"--config", "testdata/server.yaml"}, wantErr: `CLOUDLESS_HTTPS_LISTEN_PORT="x"`},
		{
			name:   "other commands ignore the server's keys",
			cmd:    func() *cobra.Command { return newDatastoreCmd(logger) },
			strict: false,
			args:   []string{"--config", "testdata/server.yaml"},
			want:   map[string]string{"data-dir": "/srv/cloudless"},
		},
		{
			name: "large numbers stay integers",
			cmd:  func() *cobra.Command { return newDatastoreCmd(logger) },
			args: []string{"--config", "testdata/big-number.yaml"},
			want: map[string]string{"datastore-reserved-space": "1073741824"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cmd, strict := newServerCmd(logger), true
			if tt.cmd != nil {
				cmd, strict = tt.cmd(), tt.strict
			}
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			err := configure(cmd, strict)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				if got := cmd.Flags().Lookup(name).Value.String(); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestNodeFlagsShared: a server's own node and a joined agent take the
// same node flags (one agent.NodeConfig.AddFlags).
func TestNodeFlagsShared(t *testing.T) {
	server, joined := newServerCmd(nil).Flags(), newAgentCmd(nil).Flags()
	for _, name := range []string{"node-name", "node-label", "node-taint", "registries", "kubelet-arg", "volume-root", "resolv-conf", "lb-arp-refresh", "lb-failure-detection"} {
		s, a := server.Lookup(name), joined.Lookup(name)
		if s == nil || a == nil || s.Usage != a.Usage {
			t.Errorf("--%s: server %v, agent %v; want the same flag on both", name, s != nil, a != nil)
		}
	}
	if joined.Lookup("node-ip") == nil || server.Lookup("node-ip") != nil {
		t.Error("--node-ip belongs to the agent only (a server's node uses --advertise-address)")
	}
}
