// Package seal encrypts the cluster's secrets before they enter the Raft log, so that
// raft.db and snapshots hold none of them in clear. The key lives outside the Raft store,
// in DATA_DIR/seal.key (0600): created by the coordinator that bootstraps the cluster and
// handed to each joiner over the authenticated join.
//
// A sealed value is "rvs1:" + base64(nonce || AES-256-GCM ciphertext): the prefix names
// the format's version, so a later format can be told apart from this one.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Prefix starts every sealed value of this version.
const Prefix = "rvs1:"

// KeyFile is the key's file name in the data dir.
const KeyFile = "seal.key"

// Key seals and opens values. The zero Key is not usable: use New, Parse or Load.
type Key struct {
	aead cipher.AEAD
	raw  []byte
}

// New makes a random key.
func New() (*Key, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	return fromRaw(raw)
}

func fromRaw(raw []byte) (*Key, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("seal key: %d bytes, want 32", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead, raw: raw}, nil
}

// Parse reads a key in its text form (base64 of 32 bytes), as String writes it.
func Parse(text string) (*Key, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("seal key: not base64: %w", err)
	}
	return fromRaw(raw)
}

// String is the key's text form. It is the secret itself: never log it.
func (k *Key) String() string { return base64.StdEncoding.EncodeToString(k.raw) }

// Load reads DATA_DIR/seal.key; a missing file is os.ErrNotExist.
func Load(dir string) (*Key, error) {
	b, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	k, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, KeyFile), err)
	}
	return k, nil
}

// Save writes the key to DATA_DIR/seal.key with mode 0600, refusing to replace one.
func (k *Key) Save(dir string) error {
	path := filepath.Join(dir, KeyFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.WriteString(k.String() + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Seal encrypts plain with a fresh random nonce. The empty string stays empty, so that
// "not set" reads the same sealed or not.
func (k *Key) Seal(plain string) string {
	if plain == "" {
		return ""
	}
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	out := k.aead.Seal(nonce, nonce, []byte(plain), []byte(Prefix))
	return Prefix + base64.RawStdEncoding.EncodeToString(out)
}

// ErrNotSealed: the value has no sealed prefix.
var ErrNotSealed = errors.New("value is not sealed")

// Open decrypts a value Seal made. The empty string opens to itself; a value without
// the prefix is ErrNotSealed (the caller decides whether a clear value is acceptable).
func (k *Key) Open(sealed string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	body, ok := strings.CutPrefix(sealed, Prefix)
	if !ok {
		return "", ErrNotSealed
	}
	raw, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
		return "", errors.New("sealed value is malformed")
	}
	ns := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, raw[:ns], raw[ns:], []byte(Prefix))
	if err != nil {
		return "", errors.New("sealed value does not open with this seal key (a data dir from another cluster, or a wrong seal.key)")
	}
	return string(plain), nil
}

// IsSealed reports whether v carries the sealed prefix.
func IsSealed(v string) bool { return strings.HasPrefix(v, Prefix) }
