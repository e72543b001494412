package power

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client for the QEMU Machine Protocol on a unix socket: newline-separated JSON.
// The server greets, the client enters command mode with qmp_capabilities, and then each
// {"execute": ...} gets exactly one {"return": ...} or {"error": ...}. Asynchronous
// {"event": ...} lines may arrive in between; they are kept for Events.
type QMP struct {
	conn net.Conn
	rd   *bufio.Reader

	mu     sync.Mutex // one command at a time
	nextID int
	events []QMPEvent
}

// QMPEvent is an asynchronous event such as RESET, SHUTDOWN or STOP.
type QMPEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// qmpMessage is any line the server sends.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"` // the greeting
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     json.RawMessage `json:"id"`
}

// maxQMPLine bounds one message; QEMU's answers to the commands used here are small.
const maxQMPLine = 1 << 20

// DialQMP connects to the socket, reads the greeting and negotiates command mode.
func DialQMP(ctx context.Context, socket string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	q := &QMP{conn: conn, rd: bufio.NewReaderSize(conn, 64<<10)}
	if err := q.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", socket, err)
	}
	return q, nil
}

func (q *QMP) handshake(ctx context.Context) error {
	q.setDeadline(ctx)
	msg, err := q.read()
	if err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if msg.QMP == nil {
		return errors.New("no QMP greeting: is this a QMP socket (-qmp unix:PATH,server=on,wait=off)?")
	}
	return q.Execute(ctx, "qmp_capabilities", nil, nil)
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs one command with optional arguments and decodes its return value into out
// (nil: ignore it). Events read meanwhile are kept for Events.
func (q *QMP) Execute(ctx context.Context, command string, args, out any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	id := fmt.Sprintf("rivet-%d", q.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	q.setDeadline(ctx)
	if _, err := q.conn.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		msg, err := q.read()
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if msg.Event != "" {
			q.events = append(q.events, QMPEvent{Event: msg.Event, Data: msg.Data})
			continue
		}
		var gotID string
		if json.Unmarshal(msg.ID, &gotID) != nil || gotID != id {
			continue // an answer to a command of an earlier, abandoned call
		}
		if msg.Error != nil {
			return msg.Error
		}
		if out == nil || msg.Return == nil {
			return nil
		}
		return json.Unmarshal(msg.Return, out)
	}
}

// Events returns and forgets the events received so far.
func (q *QMP) Events() []QMPEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	ev := q.events
	q.events = nil
	return ev
}

// WaitEvent reads until the named event arrives (or one already received is found).
func (q *QMP) WaitEvent(ctx context.Context, name string) (QMPEvent, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, ev := range q.events {
		if ev.Event == name {
			q.events = append(q.events[:i:i], q.events[i+1:]...)
			return ev, nil
		}
	}
	q.setDeadline(ctx)
	for {
		msg, err := q.read()
		if err != nil {
			return QMPEvent{}, fmt.Errorf("waiting for qmp event %s: %w", name, err)
		}
		if msg.Event == name {
			return QMPEvent{Event: msg.Event, Data: msg.Data}, nil
		}
		if msg.Event != "" {
			q.events = append(q.events, QMPEvent{Event: msg.Event, Data: msg.Data})
		}
	}
}

// Status is the answer to query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, shutdown, prelaunch, ...
}

// QueryStatus asks whether the guest CPU runs.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var st Status
	err := q.Execute(ctx, "query-status", nil, &st)
	return st, err
}

// Powerdown presses the ACPI power button: the guest OS shuts down if it listens.
func (q *QMP) Powerdown(ctx context.Context) error {
	return q.Execute(ctx, "system_powerdown", nil, nil)
}

// Reset is the reset button: a hard reboot.
func (q *QMP) Reset(ctx context.Context) error { return q.Execute(ctx, "system_reset", nil, nil) }

// Quit ends the qemu process at once (power cut). QEMU may close the socket before or
// after it answers; both mean it is quitting.
func (q *QMP) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	var qerr *QMPError
	if err != nil && !errors.As(err, &qerr) {
		return nil
	}
	return err
}

func (q *QMP) read() (*qmpMessage, error) {
	line, err := q.rd.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A long line: gather it, within bounds.
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(buf) < maxQMPLine {
			line, err = q.rd.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		return nil, err
	}
	var msg qmpMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return nil, fmt.Errorf("undecodable qmp message %.200q: %w", line, err)
	}
	return &msg, nil
}

func (q *QMP) setDeadline(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = q.conn.SetDeadline(deadline)
}
