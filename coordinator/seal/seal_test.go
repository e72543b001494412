package seal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpenRoundTripAndNonceIsFresh(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := k.Seal("the secret"), k.Seal("the secret")
	if a == b {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	if strings.Contains(a, "the secret") || !IsSealed(a) {
		t.Fatalf("sealed value %q", a)
	}
	for _, s := range []string{a, b} {
		if got, err := k.Open(s); err != nil || got != "the secret" {
			t.Fatalf("Open = %q, %v", got, err)
		}
	}
	if got, err := k.Open(""); got != "" || err != nil {
		t.Fatalf("Open(\"\") = %q, %v", got, err)
	}
}

func TestOpenRefusesTamperingOtherKeysAndClearValues(t *testing.T) {
	k, _ := New()
	other, _ := New()
	s := k.Seal("x")
	if _, err := other.Open(s); err == nil {
		t.Fatal("another key opened the value")
	}
	flipped := []byte(s)
	flipped[len(flipped)-2] ^= 1
	if _, err := k.Open(string(flipped)); err == nil {
		t.Fatal("a tampered value opened")
	}
	if _, err := k.Open("plain"); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("clear value: %v, want ErrNotSealed", err)
	}
}

func TestKeyFileIs0600AndIsNotReplaced(t *testing.T) {
	dir := t.TempDir()
	k, _ := New()
	if err := k.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	other, _ := New()
	if err := other.Save(dir); err == nil {
		t.Fatal("Save replaced an existing key")
	}
	back, err := Load(dir)
	if err != nil || back.String() != k.String() {
		t.Fatalf("Load: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := fromRaw(make([]byte, 32))
	f.Add(k.Seal("seed"))
	f.Add("rvs1:")
	f.Add("rvs1:AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		plain, err := k.Open(s)
		if err == nil && s != "" && k.Seal(plain) == "" {
			t.Fatalf("opened %q to an empty value", s)
		}
	})
}
