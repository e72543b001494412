package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// opcode is the first 16-bit field of every TFTP packet (RFC 1350, RFC 2347).
type opcode uint16

const (
	opRRQ   opcode = 1
	opWRQ   opcode = 2
	opDATA  opcode = 3
	opACK   opcode = 4
	opERROR opcode = 5
	opOACK  opcode = 6
)

// errorCode is the code field of an ERROR packet.
type errorCode uint16

const (
	codeNotDefined       errorCode = 0
	codeFileNotFound     errorCode = 1
	codeAccessViolation  errorCode = 2
	codeIllegalOperation errorCode = 4
	codeUnknownTID       errorCode = 5
	codeOptionRefused    errorCode = 8
)

// Limits of the option extension.
const (
	minBlockSize  = 8     // RFC 2348
	maxBlockSize  = 65464 // RFC 2348: the largest block that fits a 64 KiB IPv4 datagram
	maxWindowSize = 65535 // RFC 7440
	maxOptions    = 32    // more than any real client sends; bounds the work per request
	maxFilename   = 1024
)

// Option names understood by server and client (compared case-insensitively on the wire).
const (
	optBlockSize  = "blksize"
	optTransferSz = "tsize"
	optTimeout    = "timeout"
	optWindowSize = "windowsize"
)

var errMalformed = errors.New("malformed packet")

// packet is one decoded datagram: *request, *dataPacket, *ackPacket, *errorPacket or *oackPacket.
type packet interface{ op() opcode }

// option is one name/value pair of a request or an OACK, in wire order.
type option struct{ name, value string }

// request is a read (RRQ) or write (WRQ) request.
type request struct {
	write    bool
	filename string
	mode     string
	options  []option
}

type dataPacket struct {
	block   uint16
	payload []byte
}

type ackPacket struct{ block uint16 }

type errorPacket struct {
	code    errorCode
	message string
}

type oackPacket struct{ options []option }

func (r *request) op() opcode {
	if r.write {
		return opWRQ
	}
	return opRRQ
}
func (*dataPacket) op() opcode  { return opDATA }
func (*ackPacket) op() opcode   { return opACK }
func (*errorPacket) op() opcode { return opERROR }
func (*oackPacket) op() opcode  { return opOACK }

// option returns the value of the first option named name (case-insensitive).
func findOption(opts []option, name string) (string, bool) {
	for _, o := range opts {
		if strings.EqualFold(o.name, name) {
			return o.value, true
		}
	}
	return "", false
}

// parsePacket decodes one datagram. It never panics and never keeps a reference to b
// except for a DATA payload (the caller copies it if the buffer is reused).
func parsePacket(b []byte) (packet, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than an opcode", errMalformed, len(b))
	}
	body := b[2:]
	switch op := opcode(binary.BigEndian.Uint16(b)); op {
	case opRRQ, opWRQ:
		return parseRequest(op == opWRQ, body)
	case opDATA:
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: DATA without block number", errMalformed)
		}
		return &dataPacket{block: binary.BigEndian.Uint16(body), payload: body[2:]}, nil
	case opACK:
		// Trailing bytes after the block number are tolerated: they carry no meaning.
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: ACK without block number", errMalformed)
		}
		return &ackPacket{block: binary.BigEndian.Uint16(body)}, nil
	case opERROR:
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: ERROR without code", errMalformed)
		}
		msg := body[2:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i] // a missing terminator is tolerated: the message is informative only
		}
		return &errorPacket{code: errorCode(binary.BigEndian.Uint16(body)), message: string(msg)}, nil
	case opOACK:
		opts, err := parseOptions(body)
		if err != nil {
			return nil, err
		}
		return &oackPacket{options: opts}, nil
	default:
		return nil, fmt.Errorf("%w: unknown opcode %d", errMalformed, op)
	}
}

func parseRequest(write bool, body []byte) (*request, error) {
	filename, rest, ok := cutField(body)
	if !ok {
		return nil, fmt.Errorf("%w: request filename is not NUL-terminated", errMalformed)
	}
	if len(filename) == 0 || len(filename) > maxFilename {
		return nil, fmt.Errorf("%w: request filename length %d", errMalformed, len(filename))
	}
	mode, rest, ok := cutField(rest)
	if !ok || len(mode) == 0 {
		return nil, fmt.Errorf("%w: request mode missing or not NUL-terminated", errMalformed)
	}
	opts, err := parseOptions(rest)
	if err != nil {
		return nil, err
	}
	return &request{write: write, filename: string(filename), mode: string(mode), options: opts}, nil
}

// parseOptions reads name/value pairs. Some firmware pads requests with NUL bytes or
// leaves a dangling field at the end; like most servers we ignore an incomplete last pair
// instead of refusing the boot.
func parseOptions(b []byte) ([]option, error) {
	var opts []option
	for len(b) > 0 {
		name, rest, ok := cutField(b)
		if !ok {
			break
		}
		value, rest, ok := cutField(rest)
		if !ok {
			break
		}
		b = rest
		if len(name) == 0 {
			continue // NUL padding
		}
		if len(opts) == maxOptions {
			return nil, fmt.Errorf("%w: more than %d options", errMalformed, maxOptions)
		}
		opts = append(opts, option{name: string(name), value: string(value)})
	}
	return opts, nil
}

// cutField splits a NUL-terminated field off b.
func cutField(b []byte) (field, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, b, false
	}
	return b[:i], b[i+1:], true
}

func appendOpcode(b []byte, op opcode) []byte { return binary.BigEndian.AppendUint16(b, uint16(op)) }

func appendOptions(b []byte, opts []option) []byte {
	for _, o := range opts {
		b = append(b, o.name...)
		b = append(b, 0)
		b = append(b, o.value...)
		b = append(b, 0)
	}
	return b
}

func encodeRequest(r *request) []byte {
	b := appendOpcode(nil, r.op())
	b = append(b, r.filename...)
	b = append(b, 0)
	b = append(b, r.mode...)
	b = append(b, 0)
	return appendOptions(b, r.options)
}

func encodeAck(block uint16) []byte {
	return binary.BigEndian.AppendUint16(appendOpcode(make([]byte, 0, 4), opACK), block)
}

func encodeError(code errorCode, msg string) []byte {
	b := appendOpcode(make([]byte, 0, 5+len(msg)), opERROR)
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = append(b, msg...)
	return append(b, 0)
}

func encodeOACK(opts []option) []byte { return appendOptions(appendOpcode(nil, opOACK), opts) }

// putDataHeader writes the 4-byte DATA header at the start of buf.
func putDataHeader(buf []byte, block uint16) {
	binary.BigEndian.PutUint16(buf, uint16(opDATA))
	binary.BigEndian.PutUint16(buf[2:], block)
}
