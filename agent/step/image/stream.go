package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Opener opens a path on the coordinators for streaming; *shared.Client satisfies it.
type Opener interface {
	Open(ctx context.Context, path string, header http.Header) (*http.Response, error)
}

// openFunc fetches the image with extra request headers (Range, If-Range).
type openFunc func(ctx context.Context, header http.Header) (*http.Response, error)

// opener returns how to fetch url: a path ("/v1/images/...") goes to the coordinators
// through the pinned client; an absolute URL is fetched as it is (a mirror; the digest,
// not the transport, is what makes the bytes trustworthy).
func (e *Executor) opener(url string) openFunc {
	if strings.HasPrefix(url, "/") {
		return func(ctx context.Context, h http.Header) (*http.Response, error) {
			return e.Source.Open(ctx, url, h)
		}
	}
	client := e.HTTPClient
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport}
	}
	return func(ctx context.Context, h http.Header) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, step.Permanent(err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 2 {
			resp.Body.Close()
			return nil, &shared.APIError{Status: resp.StatusCode, Code: shared.CodeInternal,
				Message: fmt.Sprintf("GET %s: %s", url, resp.Status)}
		}
		return resp, nil
	}
}

// resumingBody reads an HTTP response body and, when the connection breaks mid-stream,
// asks again for the rest with a Range request guarded by If-Range (the same ETag or
// Last-Modified), so that a dropped connection at 900 MiB does not restart a 1 GiB
// download. It only continues a byte-identical stream; anything else is an error and the
// step's retry starts over.
type resumingBody struct {
	ctx       context.Context
	open      openFunc
	body      io.ReadCloser
	offset    int64  // bytes delivered so far
	length    int64  // full length, -1 when unknown
	validator string // ETag (strong) or Last-Modified
	resumes   int
}

const maxResumes = 5

func newResumingBody(ctx context.Context, open openFunc) (*resumingBody, *http.Response, error) {
	resp, err := open(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	b := &resumingBody{ctx: ctx, open: open, body: resp.Body, length: resp.ContentLength}
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		b.validator = et
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		b.validator = lm
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" {
		b.validator = "" // the server cannot resume: do not try
	}
	return b, resp, nil
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		n, err := b.body.Read(p)
		b.offset += int64(n)
		if err == nil || err == io.EOF && (b.length < 0 || b.offset == b.length) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if n > 0 {
			return n, nil // hand over what arrived; the next Read sees the error again
		}
		if rerr := b.resume(err); rerr != nil {
			return 0, rerr
		}
	}
}

// resume replaces the broken body with the rest of the stream.
func (b *resumingBody) resume(cause error) error {
	if b.ctx.Err() != nil || b.validator == "" || b.resumes >= maxResumes {
		return cause
	}
	b.resumes++
	b.body.Close()
	b.body = io.NopCloser(strings.NewReader("")) // until the new body is open
	select {
	case <-b.ctx.Done():
		return b.ctx.Err()
	case <-time.After(time.Duration(b.resumes) * 500 * time.Millisecond):
	}
	h := http.Header{}
	h.Set("Range", "bytes="+strconv.FormatInt(b.offset, 10)+"-")
	h.Set("If-Range", b.validator)
	resp, err := b.open(b.ctx, h)
	if err != nil {
		return fmt.Errorf("%w (resuming at byte %d: %v)", cause, b.offset, err)
	}
	if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Range"),
		"bytes "+strconv.FormatInt(b.offset, 10)+"-") {
		resp.Body.Close()
		return fmt.Errorf("%w (the server did not resume at byte %d: %s, so the image changed or "+
			"ranges are unsupported)", cause, b.offset, resp.Status)
	}
	b.body = resp.Body
	return nil
}

func (b *resumingBody) Close() error { return b.body.Close() }

// describeOpenError explains a failed image request and says what to do about it.
func describeOpenError(url string, err error) error {
	switch shared.StatusOf(err) {
	case http.StatusNotFound:
		return step.WithHint(step.Permanent(fmt.Errorf("image %s not found on the coordinator: %w", url, err)),
			"put the image file into the coordinator's image directory (every coordinator serves it), "+
				"or fix the role's image.url")
	case http.StatusUnauthorized, http.StatusForbidden:
		return step.Permanent(fmt.Errorf("image %s: access refused: %w", url, err))
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("fetching image %s: %w", url, err)
}
