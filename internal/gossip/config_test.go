package gossip

import (
	"strings"
	"testing"
)

func TestSerfConfig(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		node              Node
		wantErr           string
		wantBind, wantAdv string
		wantPort, advPort int
	}{
		{name: "defaults", node: Node{Name: "c1", Key: key}, wantBind: "0.0.0.0", wantPort: 7946, advPort: 7946},
		{name: "advertise ip keeps bind port", node: Node{Name: "c1", Key: key, BindAddr: "127.0.0.1:8000", AdvertiseAddr: "10.0.0.9"},
			wantBind: "127.0.0.1", wantPort: 8000, wantAdv: "10.0.0.9", advPort: 8000},
		{name: "advertise ip:port", node: Node{Name: "c1", Key: key, BindAddr: ":8000", AdvertiseAddr: "10.0.0.9:9000"},
			wantBind: "0.0.0.0", wantPort: 8000, wantAdv: "10.0.0.9", advPort: 9000},
		{name: "no key", node: Node{Name: "c1"}, wantErr: "key"},
		{name: "bad port", node: Node{Name: "c1", Key: key, BindAddr: "0.0.0.0:99999"}, wantErr: "bad port"},
		{name: "advertise a name", node: Node{Name: "c1", Key: key, AdvertiseAddr: "host.example:1"}, wantErr: "want an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := SerfConfig(tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ml := conf.MemberlistConfig
			if ml.BindAddr != tt.wantBind || ml.BindPort != tt.wantPort || ml.AdvertiseAddr != tt.wantAdv || ml.AdvertisePort != tt.advPort {
				t.Fatalf("bind %s:%d advertise %s:%d", ml.BindAddr, ml.BindPort, ml.AdvertiseAddr, ml.AdvertisePort)
			}
			if !ml.GossipVerifyIncoming || !ml.GossipVerifyOutgoing || len(ml.SecretKey) != 32 || conf.NodeName != "c1" {
				t.Fatal("encryption not enforced both ways, or the name is lost")
			}
		})
	}
}
