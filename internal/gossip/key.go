package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// KeySize is the gossip key length: 32 bytes selects AES-256 in memberlist.
const KeySize = 32

// GenerateKey returns a new random gossip key, base64 encoded as GossipInfo carries it.
// It is a secret: it goes to the coordinator's data dir and to registered agents only.
func GenerateKey() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generating gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// DecodeKey checks and decodes a base64 gossip key. The error never echoes the key.
func DecodeKey(encoded string) ([]byte, error) {
	if encoded == "" {
		return nil, fmt.Errorf("no gossip key: the pool is always encrypted (generate one with GenerateKey)")
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not valid base64")
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("gossip key is %d bytes, want %d (AES-256)", len(key), KeySize)
	}
	return key, nil
}
