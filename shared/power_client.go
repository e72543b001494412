package shared

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Power sends one machine's power command; ref is a machine ID, expected-row key or host
// name. The BMC's failure is in the outcome (OK false, Error), not the error. The answer
// comes when the BMC's does: an off waits for the OS's soft-off, so the client waits up
// to PowerAnswerWait, past its usual timeout (the coordinator bounds the command with
// --power-timeout); ctx can end it sooner.
func (c *Client) Power(ctx context.Context, ref string, req *PowerRequest) (*PowerOutcome, error) {
	var out PowerOutcome
	path := strings.Replace(PathMachinePower, "{id}", url.PathEscape(ref), 1)
	return &out, c.waiting(PowerAnswerWait).Do(ctx, http.MethodPost, path, req, &out)
}

// PowerAnswerWait is how long Power waits for one command's answer.
const PowerAnswerWait = 5 * time.Minute

// waiting returns a copy of c whose requests may take up to d.
func (c *Client) waiting(d time.Duration) *Client {
	hc := *c.http
	hc.Timeout = max(hc.Timeout, d)
	w := &Client{urls: c.urls, token: c.token, http: &hc}
	w.next.Store(c.next.Load())
	return w
}

// PowerBatch sends a batch power command and reads the streamed answer, calling each
// (may be nil) with every machine's outcome as its command ends. A batch runs as long as
// its batch size and stagger make it: the client's timeout does not apply, ctx bounds
// it, and ending ctx stops the batch (machines not yet started are not switched).
func (c *Client) PowerBatch(ctx context.Context, req *PowerBatchRequest, each func(PowerOutcome)) (*PowerBatchResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, base := range c.urls {
		res, err := c.powerBatchOnce(ctx, base, body, each)
		if err == nil || !errors.Is(err, errUnsent) && !resendable(http.MethodPost, err) || ctx.Err() != nil {
			return res, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no coordinator answered (tried %s): %w", strings.Join(c.urls, ", "), lastErr)
}

func (c *Client) powerBatchOnce(ctx context.Context, base string, body []byte, each func(PowerOutcome)) (*PowerBatchResult, error) {
	hreq, wrote, err := c.newRequest(ctx, http.MethodPost, base+PathPower, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", PowerStreamType)
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(hreq)
	if err != nil {
		if !wrote.Load() {
			return nil, fmt.Errorf("%w: %w", errUnsent, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeAPIError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line PowerStreamLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("power batch answer: %w", err)
		}
		if line.Outcome != nil && each != nil {
			each(*line.Outcome)
		}
		if line.Result != nil {
			return line.Result, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("power batch answer ended early (the batch may be partly done: see the machines' timelines): %w", err)
	}
	return nil, errors.New("power batch answer ended early (the batch may be partly done: see the machines' timelines)")
}
