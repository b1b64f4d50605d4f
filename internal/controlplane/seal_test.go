package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudless-dev/cloudless/internal/datastore"
)

const strongToken = "k3v9q2m7x4c8w1z6p5t0r2n8b4"

func TestSealOpen(t *testing.T) {
	plain := []byte(`{"tls/ca.key":"secret"}`)
	a, err := seal(strongToken, plain, bootstrapKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := seal(strongToken, plain, bootstrapKey)
	var sa, sb sealed
	json.Unmarshal(a, &sa)
	json.Unmarshal(b, &sb)
	if sa.KDF != "argon2id" || len(sa.Salt) != 16 || bytes.Equal(sa.Salt, sb.Salt) || sa.MemoryKiB < 64*1024 {
		t.Errorf("sealed %+v and %+v: want argon2id, 64 MiB, a random 16-byte salt each", sa, sb)
	}
	if bytes.Contains(a, []byte("secret")) {
		t.Error("the plaintext shows in the sealed data")
	}
	for _, tc := range []struct {
		name, token, key string
		wantErr          bool
	}{
		{"right token", strongToken, bootstrapKey, false},
		{"wrong token", strongToken + "x", bootstrapKey, true},
		{"another key", strongToken, "/elsewhere", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, legacy, err := open(tc.token, a, tc.key)
			if tc.wantErr {
				if !errors.Is(err, errWrongToken) {
					t.Fatalf("open = %q, %v; want errWrongToken", got, err)
				}
				return
			}
			if err != nil || legacy || !bytes.Equal(got, plain) {
				t.Fatalf("open = %q, legacy %v, %v", got, legacy, err)
			}
		})
	}
}

func TestTokenStrength(t *testing.T) {
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"", false},
		{"x", false},
		{"t0ken", false},
		{"ha-test-token", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false}, // long, one character
		{strongToken, true},
		{GenerateToken(), true},
		{"Correct-Horse-Battery-Staple-42", true},
	} {
		if err := CheckToken(tc.token); (err == nil) != tc.ok {
			t.Errorf("CheckToken(%q) = %v (%.0f bits), want ok %v", tc.token, err, TokenBits(tc.token), tc.ok)
		}
	}
	if err := CheckToken("weak"); err == nil || !strings.Contains(err.Error(), "e.g. --token ") {
		t.Errorf("CheckToken(weak) = %v, want a suggested token", err)
	}
}

// legacySeal seals as the first format did (HKDF, fixed salt).
func legacySeal(t *testing.T, token string, plain []byte) []byte {
	aead, err := legacyAEAD(token)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, []byte(bootstrapKey))
}

// TestBootstrapExchange runs against the embedded datastore: the first
// server stores its files (and a weak token is refused there), the next
// one gets them, and data sealed in the first format is opened with the
// same token and sealed again with argon2id, after which it still opens
// and a wrong token still does not.
func TestBootstrapExchange(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-seal-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := datastore.DefaultConfig()
	cfg.DataDir = dir
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ds.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-ds.Ready():
	case err := <-done:
		t.Fatalf("datastore: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("datastore not ready after 30 s")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + cfg.SocketPath()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	log := slog.New(slog.DiscardHandler)
	files := map[string][]byte{"tls/ca.key": []byte("key"), "tls/ca.crt": []byte("crt")}
	mine := func() (map[string][]byte, error) { return files, nil }

	if _, _, err := exchangeBootstrap(ctx, cli, "t0ken", mine, log); err == nil || !strings.Contains(err.Error(), "too weak") {
		t.Fatalf("a new cluster with a weak token: %v, want refused", err)
	}
	got, first, err := exchangeBootstrap(ctx, cli, strongToken, mine, log)
	if err != nil || !first || string(got["tls/ca.key"]) != "key" {
		t.Fatalf("first server: %v, first %v, %v", got, first, err)
	}
	other := func() (map[string][]byte, error) { return map[string][]byte{"tls/ca.key": []byte("other")}, nil }
	if got, first, err = exchangeBootstrap(ctx, cli, strongToken, other, log); err != nil || first || string(got["tls/ca.key"]) != "key" {
		t.Fatalf("second server: %v, first %v, %v; want the first server's files", got, first, err)
	}

	// Migration: data in the first format, with a token too weak for a
	// new cluster, keeps working and is sealed again.
	plain, _ := json.Marshal(files)
	if _, err := cli.Put(ctx, bootstrapKey, string(legacySeal(t, "t0ken", plain))); err != nil {
		t.Fatal(err)
	}
	if got, first, err = exchangeBootstrap(ctx, cli, "t0ken", other, log); err != nil || first || string(got["tls/ca.key"]) != "key" {
		t.Fatalf("legacy data: %v, first %v, %v; want the stored files", got, first, err)
	}
	resp, err := cli.Get(ctx, bootstrapKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	var s sealed
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil || s.KDF != "argon2id" {
		t.Fatalf("after migration the stored data is %q… (%v), want the argon2id format", resp.Kvs[0].Value[:min(40, len(resp.Kvs[0].Value))], err)
	}
	if got, _, err = exchangeBootstrap(ctx, cli, "t0ken", other, log); err != nil || string(got["tls/ca.key"]) != "key" {
		t.Fatalf("migrated data: %v, %v", got, err)
	}
	if _, _, err := exchangeBootstrap(ctx, cli, "t0ke", other, log); !errors.Is(err, errWrongToken) {
		t.Fatalf("migrated data with a wrong token: %v, want errWrongToken", err)
	}
}
