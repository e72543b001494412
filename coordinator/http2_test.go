package coordinator

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// A fresh client may send many requests before it reads the server's SETTINGS. With a
// decoder table below the protocol's 4096 the server misreads the headers it encoded for
// 4096 and closes the connection with COMPRESSION_ERROR; every request here must succeed.
func TestAPIHTTP2AcceptsAFreshClientsBurst(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = apiHTTP2Config()
	srv.StartTLS()
	defer srv.Close()

	for round := range 5 {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		client := &http.Client{Transport: tr}
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
				// Distinct values, so each one enters the client's HPACK table.
				req.Header.Set("Authorization", fmt.Sprintf("Bearer %d-%d-%s", round, i, strings.Repeat("x", 200)))
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					errs <- fmt.Errorf("answered over HTTP/%d, not HTTP/2", resp.ProtoMajor)
				}
			}()
		}
		wg.Wait()
		tr.CloseIdleConnections()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
