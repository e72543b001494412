package tftp

import (
	"sync"
	"testing"
)

// BenchmarkFetchRack measures 200 machines fetching an ipxe.efi-sized file at once
// (server and clients in this process): go test -bench FetchRack -run XXX.
func BenchmarkFetchRack(b *testing.B) {
	ts := startServer(b, Config{})
	want := ts.writeFile(b, "ipxe.efi", 850528)
	b.SetBytes(int64(len(want)) * 200)
	for b.Loop() {
		var wg sync.WaitGroup
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := Fetch(testContext(b), ts.addr, "ipxe.efi", FetchOptions{BlockSize: 1468, WindowSize: 16})
				if err != nil || len(got) != len(want) {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
}
