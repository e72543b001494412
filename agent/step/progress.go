package step

import (
	"sync"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// progressPump turns an executor's frequent progress calls into at most one report per
// interval, sent from its own goroutine so that a slow coordinator never slows the disk
// writes. It fills in the rate when the executor leaves it zero.
type progressPump struct {
	every time.Duration
	send  func(shared.Progress)

	mu         sync.Mutex
	latest     shared.Progress
	have       bool
	lastSignal time.Time

	wake     chan struct{}
	quit     chan struct{}
	finished chan struct{}
}

func newProgressPump(every time.Duration, send func(shared.Progress)) *progressPump {
	p := &progressPump{every: every, send: send,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), finished: make(chan struct{})}
	go p.loop(time.Now())
	return p
}

// update is the callback handed to the executor.
func (p *progressPump) update(pr shared.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest, p.have = pr, true
	if now := time.Now(); now.Sub(p.lastSignal) >= p.every {
		p.lastSignal = now
		select {
		case p.wake <- struct{}{}:
		default: // a report is pending already; it will pick up the latest value
		}
	}
}

func (p *progressPump) loop(start time.Time) {
	defer close(p.finished)
	prevDone, prevAt := int64(0), start
	for {
		select {
		case <-p.quit:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		pr := p.latest
		p.mu.Unlock()
		now := time.Now()
		if pr.BytesPerSec == 0 && pr.Done > prevDone {
			if secs := now.Sub(prevAt).Seconds(); secs > 0 {
				pr.BytesPerSec = float64(pr.Done-prevDone) / secs
			}
		}
		prevDone, prevAt = pr.Done, now
		p.send(pr)
	}
}

// stop ends the pump, waits for a report in flight, and returns the last progress seen
// (nil if none), so that the result report is never overtaken by a progress report.
func (p *progressPump) stop() *shared.Progress {
	close(p.quit)
	<-p.finished
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.have {
		return nil
	}
	last := p.latest
	return &last
}
