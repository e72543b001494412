package power

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// fakeQMP serves one connection: the greeting, then answers scripted per command, with
// an event before each answer, as QEMU interleaves them.
func fakeQMP(t *testing.T, answers map[string]string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				return
			}
			conn.Write([]byte(`{"event": "RESET", "data": {"guest": false}, "timestamp": {"seconds": 1}}` + "\n"))
			ans, ok := answers[req.Execute]
			if !ok {
				ans = `{"error": {"class": "CommandNotFound", "desc": "The command ` + req.Execute + ` has not been found"}}`
			}
			// Answer with the request's id, spliced into the scripted object.
			conn.Write([]byte(ans[:len(ans)-1] + `, "id": ` + string(req.ID) + "}\n"))
		}
	}()
	return sock
}

func TestQMPProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sock := fakeQMP(t, map[string]string{
		"qmp_capabilities": `{"return": {}}`,
		"query-status":     `{"return": {"status": "running", "singlestep": false, "running": true}}`,
		"system_reset":     `{"return": {}}`,
	})
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.QueryStatus(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	if err := q.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	var qerr *QMPError
	if err := q.Powerdown(ctx); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v, want a CommandNotFound QMPError", err)
	}
	if ev := q.Events(); len(ev) != 4 || ev[0].Event != "RESET" {
		t.Fatalf("events kept: %+v, want 4 RESET events (one per command)", ev)
	}
}

func TestQMPRefusesNonQMPSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Write([]byte(`{"hello": "world"}` + "\n"))
			// Keep the connection open until DialQMP hangs up, so it refuses what it was sent
			// rather than a closed socket.
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialQMP(ctx, sock); err == nil {
		t.Fatal("DialQMP accepted a socket that sent no QMP greeting")
	}
}
