package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// bootstrapKey holds, in the datastore, what every server of a cluster must
// share: the CAs, the service-account key pair and the Secrets encryption
// config, sealed with a key derived from the cluster token (seal.go).
const bootstrapKey = "/cloudless/bootstrap"

// sharedFiles are the files servers share, relative to <data-dir>/server.
var sharedFiles = []string{
	"tls/ca.crt", "tls/ca.key", "tls/front-proxy-ca.crt", "tls/front-proxy-ca.key",
	"tls/sa.key", "tls/sa.pub", "cred/encryption-config.yaml",
}

// syncBootstrap makes this server's shared files those of the cluster: the
// first server to get here stores its own; the others take them.
func (s *Server) syncBootstrap(ctx context.Context) error {
	if s.cfg.Token == "" {
		return fmt.Errorf("servers sharing a datastore need --token (the same on every server) to protect the cluster CA stored in it; e.g. --token %s", GenerateToken())
	}
	cli, err := s.cfg.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	mine := func() (map[string][]byte, error) {
		if err := s.ensureCAs(); err != nil {
			return nil, err
		}
		if err := s.writeConfigFiles(); err != nil {
			return nil, err
		}
		files := map[string][]byte{}
		for _, f := range sharedFiles {
			b, err := os.ReadFile(s.paths.file(f))
			if err != nil {
				return nil, err
			}
			files[f] = b
		}
		return files, nil
	}
	files, first, err := exchangeBootstrap(ctx, cli, s.cfg.Token, mine, s.log)
	if err != nil || first {
		return err
	}
	for name, data := range files {
		mode := os.FileMode(0o600)
		if name == "tls/ca.crt" || name == "tls/front-proxy-ca.crt" || name == "tls/sa.pub" {
			mode = 0o644
		}
		if err := writeShared(s.paths.file(name), data, mode); err != nil {
			return err
		}
	}
	s.log.Info("joined the cluster's CA and keys from the datastore")
	return nil
}

// exchangeBootstrap stores mine() sealed under token if the datastore
// holds no bootstrap data yet (first is true: a new cluster, and the token
// must be strong), or else opens and returns what is there. Data sealed in
// the first format is sealed again in the current one, in a transaction
// that only succeeds if nobody changed it meanwhile.
func exchangeBootstrap(ctx context.Context, kv clientv3.KV, token string, mine func() (map[string][]byte, error), log *slog.Logger) (files map[string][]byte, first bool, err error) {
	resp, err := kv.Get(ctx, bootstrapKey)
	if err != nil {
		return nil, false, fmt.Errorf("read cluster bootstrap data: %w", err)
	}
	if len(resp.Kvs) == 0 {
		if err := CheckToken(token); err != nil {
			return nil, false, err
		}
		files, err := mine()
		if err != nil {
			return nil, false, err
		}
		plain, _ := json.Marshal(files)
		data, err := seal(token, plain, bootstrapKey)
		if err != nil {
			return nil, false, err
		}
		txn, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(bootstrapKey), "=", 0)).
			Then(clientv3.OpPut(bootstrapKey, string(data))).Else(clientv3.OpGet(bootstrapKey)).Commit()
		if err != nil {
			return nil, false, fmt.Errorf("store cluster bootstrap data: %w", err)
		}
		if txn.Succeeded {
			log.Info("stored cluster CA and keys in the datastore for other servers", "kdf", sealKDF)
			return files, true, nil
		}
		resp = (*clientv3.GetResponse)(txn.Responses[0].GetResponseRange())
	}
	stored := resp.Kvs[0]
	plain, legacy, err := open(token, stored.Value, bootstrapKey)
	if err != nil {
		return nil, false, err
	}
	if err := json.Unmarshal(plain, &files); err != nil {
		return nil, false, fmt.Errorf("cluster bootstrap data: %w", err)
	}
	if legacy {
		data, err := seal(token, plain, bootstrapKey)
		if err != nil {
			return nil, false, err
		}
		txn, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(bootstrapKey), "=", stored.ModRevision)).
			Then(clientv3.OpPut(bootstrapKey, string(data))).Commit()
		switch {
		case err != nil:
			return nil, false, fmt.Errorf("seal the cluster bootstrap data again with %s: %w", sealKDF, err)
		case txn.Succeeded:
			log.Info("sealed the cluster bootstrap data again: its key is now derived from --token with argon2id and a random salt (was HKDF)")
		}
	}
	if bits := TokenBits(token); bits < MinTokenBits {
		log.Warn("--token is weak: anyone with a copy of the datastore could guess it and read the cluster CA's key; new clusters refuse such a token", "bits", int(bits), "need", MinTokenBits)
	}
	return files, false, nil
}
