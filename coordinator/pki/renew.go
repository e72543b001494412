package pki

import (
	"crypto/tls"
	"sync"
	"time"
)

// Renewing hands out a certificate and replaces it before it expires, without a restart:
// TLS configs call Get from GetCertificate and GetClientCertificate, so the next
// handshake after a renewal uses the new certificate.
type Renewing struct {
	// Issue makes a fresh certificate (and persists it, if the caller keeps it on disk).
	Issue func(now time.Time) (*tls.Certificate, error)
	// OnError hears of a failed renewal; the current certificate stays in use meanwhile.
	OnError func(error)
	Now     func() time.Time // the clock; time.Now when nil

	mu        sync.Mutex
	cur       *tls.Certificate
	lastTried time.Time
}

// NewRenewing starts from cert (which has its Leaf set).
func NewRenewing(cert *tls.Certificate, issue func(time.Time) (*tls.Certificate, error)) *Renewing {
	return &Renewing{cur: cert, Issue: issue}
}

// retryEvery spaces out renewal attempts that fail (no CA key here yet, say).
const retryEvery = 30 * time.Second

// Get returns the current certificate, renewing it first once less than a third of its
// lifetime is left.
func (r *Renewing) Get() (*tls.Certificate, error) {
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !dueForRenewal(r.cur, now) || now.Sub(r.lastTried) < retryEvery {
		return r.cur, nil
	}
	r.lastTried = now
	fresh, err := r.Issue(now)
	if err != nil {
		if r.OnError != nil {
			r.OnError(err)
		}
		return r.cur, nil
	}
	r.cur = fresh
	return fresh, nil
}

func dueForRenewal(c *tls.Certificate, now time.Time) bool {
	if c == nil || c.Leaf == nil {
		return true
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	return now.After(c.Leaf.NotAfter.Add(-life / 3))
}

// Current returns the certificate in use, without renewing it.
func (r *Renewing) Current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}
