package token

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

const hash = "5f2b0f4a2f1e1b3c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Join
		wantErr string
	}{
		{in: "CL1." + hash + ".abcdef.0123456789abcdef", want: Join{CAHash: hash, ID: "abcdef", Secret: "0123456789abcdef"}},
		{in: "  CL1." + hash + ".abcdef.0123456789abcdef\n", want: Join{CAHash: hash, ID: "abcdef", Secret: "0123456789abcdef"}},
		{in: "abcdef.0123456789abcdef", wantErr: "not a join token"},
		{in: "K10" + hash + "::server:secret", wantErr: "not a join token"},
		{in: "CL1." + hash[:60] + ".abcdef.0123456789abcdef", wantErr: "CA hash"},
		{in: "CL1." + hash + ".ABCDEF.0123456789abcdef", wantErr: "id.secret"},
		{in: "CL1." + hash + ".abcdef.0123", wantErr: "id.secret"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if back, _ := Parse(got.String()); back != got {
			t.Errorf("String() does not parse back: %q", got.String())
		}
	}
}

func TestCAHash(t *testing.T) {
	ca, err := os.ReadFile("testdata/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/ca.sha256") // openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum
	if err != nil {
		t.Fatal(err)
	}
	got, err := CAHash(ca)
	if err != nil || got != strings.TrimSpace(string(want)) {
		t.Fatalf("CAHash = %q, %v; want %q", got, err, want)
	}
	if _, err := CAHash([]byte("nonsense")); err == nil {
		t.Fatal("CAHash of nonsense: no error")
	}
}

func TestCreateListDelete(t *testing.T) {
	ctx := context.Background()
	ca, _ := os.ReadFile("testdata/ca.crt")
	c := fake.NewClientset()
	forever, err := Create(ctx, c, ca, 0, "rack 4")
	if err != nil {
		t.Fatal(err)
	}
	day, err := Create(ctx, c, ca, 24*time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if forever.ID == day.ID || forever.Secret == day.Secret {
		t.Fatal("two tokens share an id or secret")
	}
	list, err := List(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != day.ID || list[0].Expires == nil || list[1].ID != forever.ID || list[1].Description != "rack 4" {
		t.Fatalf("List = %+v: want the expiring token first, then the one that never expires", list)
	}
	if strings.Join(list[0].Usages, ",") != "authentication,signing" || list[0].Groups[0] != NodeGroup {
		t.Fatalf("usages %v groups %v", list[0].Usages, list[0].Groups)
	}
	if err := Delete(ctx, c, forever.String()); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, c, day.Bootstrap()); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, c, day.ID); err == nil || !strings.Contains(err.Error(), "no token with id") {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := Delete(ctx, c, "../etc"); err == nil || !strings.Contains(err.Error(), "not a token id") {
		t.Fatalf("bad id: %v", err)
	}
}
