package controlplane

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/hkdf"
)

// bootstrapKey holds, in the datastore, what every server of a cluster must
// share: the CAs, the service-account key pair and the Secrets encryption
// config, sealed with a key derived from the cluster token.
const bootstrapKey = "/cloudless/bootstrap"

// sharedFiles are the files servers share, relative to <data-dir>/server.
var sharedFiles = []string{
	"tls/ca.crt", "tls/ca.key", "tls/front-proxy-ca.crt", "tls/front-proxy-ca.key",
	"tls/sa.key", "tls/sa.pub", "cred/encryption-config.yaml",
}

// syncBootstrap makes this server's shared files those of the cluster: the
// first server to get here stores its own; the others take them.
func (s *Server) syncBootstrap(ctx context.Context) error {
	cli, err := s.cfg.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	aead, err := sealer(s.cfg.Token)
	if err != nil {
		return err
	}
	resp, err := cli.Get(ctx, bootstrapKey)
	if err != nil {
		return fmt.Errorf("read cluster bootstrap data: %w", err)
	}
	if len(resp.Kvs) == 0 {
		// First server: make the shared files and offer them.
		if err := s.ensureCAs(); err != nil {
			return err
		}
		if err := s.writeConfigFiles(); err != nil {
			return err
		}
		files := map[string][]byte{}
		for _, f := range sharedFiles {
			b, err := os.ReadFile(s.paths.file(f))
			if err != nil {
				return err
			}
			files[f] = b
		}
		plain, _ := json.Marshal(files)
		nonce := make([]byte, aead.NonceSize())
		rand.Read(nonce)
		sealed := string(aead.Seal(nonce, nonce, plain, []byte(bootstrapKey)))
		txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(bootstrapKey), "=", 0)).
			Then(clientv3.OpPut(bootstrapKey, sealed)).Else(clientv3.OpGet(bootstrapKey)).Commit()
		if err != nil {
			return fmt.Errorf("store cluster bootstrap data: %w", err)
		}
		if txn.Succeeded {
			s.log.Info("stored cluster CA and keys in the datastore for other servers")
			return nil
		}
		resp = (*clientv3.GetResponse)(txn.Responses[0].GetResponseRange())
	}
	sealed := resp.Kvs[0].Value
	if len(sealed) < aead.NonceSize() {
		return errors.New("cluster bootstrap data in the datastore is damaged")
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(bootstrapKey))
	if err != nil {
		return errors.New("cannot open the cluster's bootstrap data: --token differs from the one the first server used; give every server the same --token")
	}
	var files map[string][]byte
	if err := json.Unmarshal(plain, &files); err != nil {
		return fmt.Errorf("cluster bootstrap data: %w", err)
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

func sealer(token string) (cipher.AEAD, error) {
	if token == "" {
		return nil, errors.New("servers sharing a datastore need --token (the same on every server) to protect the cluster CA stored in it")
	}
	key := make([]byte, 32)
	if _, err := hkdf.New(sha256.New, []byte(token), []byte("cloudless"), []byte("bootstrap")).Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
