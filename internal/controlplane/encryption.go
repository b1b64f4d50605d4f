package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// Secrets are encrypted at rest with secretbox (XSalsa20-Poly1305). The
// first key in encryption-config.yaml encrypts; every key listed decrypts;
// identity, last, reads Secrets written before encryption was on. The
// apiserver reloads the file by itself (encryptionReloadInterval).

const (
	secretsPrefix = "/registry/secrets/"
	probeName     = "cloudless-encryption-probe"
)

// EncryptionKey is a key in the encryption config, without its secret.
type EncryptionKey struct {
	Name    string `json:"name"`
	Active  bool   `json:"active"`
	Secrets int    `json:"secrets"` // Secrets stored with this key
}

// EncryptionStatus describes Secrets encryption on this server.
type EncryptionStatus struct {
	Provider    string          `json:"provider"`
	Keys        []EncryptionKey `json:"keys"`
	Secrets     int             `json:"secrets"`
	Unencrypted int             `json:"unencrypted"`
	UnknownKey  int             `json:"unknownKey"` // stored with a key no longer configured: unreadable
}

// Encryption reads and rotates the Secrets encryption keys of the server
// configured by Config. The server must be running.
type Encryption struct {
	Config Config // the server's: data dir and datastore
	Client kubernetes.Interface
	// Progress, if set, is told about each step.
	Progress func(msg string)
}

func (e *Encryption) configPath() string {
	return paths{datadir.Of(e.Config.DataDir).Server()}.cred("encryption-config.yaml")
}

func (e *Encryption) progress(format string, args ...any) {
	if e.Progress != nil {
		e.Progress(fmt.Sprintf(format, args...))
	}
}

func (e *Encryption) readConfig() (*apiserverv1.EncryptionConfiguration, []apiserverv1.Key, error) {
	b, err := os.ReadFile(e.configPath())
	if err != nil {
		return nil, nil, fmt.Errorf("read the encryption config (is this a server, and --data-dir right?): %w", err)
	}
	var cfg apiserverv1.EncryptionConfiguration
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", e.configPath(), err)
	}
	if len(cfg.Resources) != 1 || len(cfg.Resources[0].Providers) == 0 || cfg.Resources[0].Providers[0].Secretbox == nil {
		return nil, nil, fmt.Errorf("%s was not written by Cloudless (want one resource list whose first provider is secretbox); edit it back or rotate by hand", e.configPath())
	}
	return &cfg, cfg.Resources[0].Providers[0].Secretbox.Keys, nil
}

func (e *Encryption) writeKeys(cfg *apiserverv1.EncryptionConfiguration, keys []apiserverv1.Key) error {
	cfg.Resources[0].Providers[0].Secretbox.Keys = keys
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return pkiWrite(e.configPath(), b)
}

// Status counts the Secrets in the datastore by the key they are stored
// with.
func (e *Encryption) Status(ctx context.Context) (EncryptionStatus, error) {
	_, keys, err := e.readConfig()
	if err != nil {
		return EncryptionStatus{}, err
	}
	counts, total, plain, err := e.countByKey(ctx)
	if err != nil {
		return EncryptionStatus{}, err
	}
	st := EncryptionStatus{Provider: "secretbox", Secrets: total, Unencrypted: plain, UnknownKey: total - plain}
	for i, k := range keys {
		st.Keys = append(st.Keys, EncryptionKey{Name: k.Name, Active: i == 0, Secrets: counts[k.Name]})
		st.UnknownKey -= counts[k.Name]
	}
	return st, nil
}

// countByKey reads every Secret's stored bytes from the local datastore.
func (e *Encryption) countByKey(ctx context.Context) (byKey map[string]int, total, plain int, err error) {
	cli, err := e.Config.EtcdClient()
	if err != nil {
		return nil, 0, 0, err
	}
	defer cli.Close()
	byKey = map[string]int{}
	prefix := []byte("k8s:enc:secretbox:v1:")
	key := secretsPrefix
	end := clientv3.GetPrefixRangeEnd(secretsPrefix)
	for {
		resp, err := cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(500))
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read Secrets from the datastore %s (is the server running?): %w", e.Config.etcdServers(), err)
		}
		for _, kv := range resp.Kvs {
			total++
			rest, ok := bytes.CutPrefix(kv.Value, prefix)
			name, _, found := bytes.Cut(rest, []byte(":"))
			if !ok || !found {
				plain++
				continue
			}
			byKey[string(name)]++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return byKey, total, plain, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Rotate makes a new key active, rewrites every Secret with it, and then
// drops the old keys. Each step waits for the apiserver to load the file.
// It is safe to run again after an interruption.
func (e *Encryption) Rotate(ctx context.Context) (string, error) {
	if datadir.Of(e.Config.DataDir).Shared() {
		return "", errors.New("this server shares its datastore with others (--datastore-endpoint): rotating keys on several servers at once is not supported yet (every server must load the new key before any writes with it); see docs/security.md for the manual steps")
	}
	cfg, keys, err := e.readConfig()
	if err != nil {
		return "", err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	newKey := apiserverv1.Key{Name: fmt.Sprintf("key-%d", time.Now().Unix()), Secret: base64.StdEncoding.EncodeToString(secret)}
	if keys[0].Name == newKey.Name {
		return "", errors.New("a key was made this second; run again")
	}

	e.progress("[1/4] adding key %s as the active key", newKey.Name)
	if err := e.writeKeys(cfg, append([]apiserverv1.Key{newKey}, keys...)); err != nil {
		return "", err
	}
	if err := e.waitActive(ctx, newKey.Name); err != nil {
		return "", err
	}

	list, err := e.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list Secrets: %w", err)
	}
	e.progress("[2/4] rewriting %d Secrets with the new key", len(list.Items))
	for _, s := range list.Items {
		if err := e.rewrite(ctx, s.Namespace, s.Name); err != nil {
			return "", err
		}
	}

	e.progress("[3/4] checking every Secret in the datastore")
	counts, total, _, err := e.countByKey(ctx)
	if err != nil {
		return "", err
	}
	if counts[newKey.Name] != total {
		return "", fmt.Errorf("%d of %d Secrets are not yet stored with %s; the old keys are kept: run `cloudless secrets-encrypt rotate` again", total-counts[newKey.Name], total, newKey.Name)
	}

	e.progress("[4/4] removing the old keys")
	if err := e.writeKeys(cfg, []apiserverv1.Key{newKey}); err != nil {
		return "", err
	}
	return newKey.Name, nil
}

// waitActive writes a probe Secret until the datastore shows it stored
// with key: then the apiserver has loaded the new config.
func (e *Encryption) waitActive(ctx context.Context, key string) error {
	cli, err := e.Config.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	secrets := e.Client.CoreV1().Secrets(metav1.NamespaceSystem)
	defer secrets.Delete(context.WithoutCancel(ctx), probeName, metav1.DeleteOptions{})
	want := []byte("k8s:enc:secretbox:v1:" + key + ":")
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; ; i++ {
		probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: probeName}, StringData: map[string]string{"n": fmt.Sprint(time.Now().UnixNano())}}
		_, err := secrets.Update(ctx, probe, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			_, err = secrets.Create(ctx, probe, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("write probe Secret: %w", err)
		}
		resp, err := cli.Get(ctx, secretsPrefix+metav1.NamespaceSystem+"/"+probeName)
		if err != nil {
			return fmt.Errorf("read probe Secret from the datastore: %w", err)
		}
		if len(resp.Kvs) == 1 && bytes.HasPrefix(resp.Kvs[0].Value, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver has not loaded the new key after 3 minutes; the old keys still work; check the server's log, then run `cloudless secrets-encrypt rotate` again")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// rewrite writes a Secret back unchanged; the apiserver stores it with
// the active key because it was read with another one.
func (e *Encryption) rewrite(ctx context.Context, ns, name string) error {
	secrets := e.Client.CoreV1().Secrets(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("rewrite Secret %s/%s: %w", ns, name, err)
	}
	return nil
}
