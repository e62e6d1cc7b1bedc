// Package guestagent implements a small guest agent for Gondolin micro-VMs:
// the exec part of the control protocol Gondolin's host speaks on the
// virtio-serial port named "virtio-port". It exists for tests: booting a
// converted image under the real Gondolin host needs something at
// /usr/bin/sandboxd that answers exec requests.
//
// Wire format (checked against @earendil-works/gondolin 0.12.0's host code):
// every frame is a 4-byte big-endian length followed by that many bytes of
// CBOR holding a map {v: 1, t: <type>, id: <uint32>, p: {...}}. Frames larger
// than 4 MiB are a protocol violation.
package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// MaxFrame is the largest frame payload either side accepts (4 MiB).
const MaxFrame = 4 * 1024 * 1024

// ProtocolVersion is the value of the "v" field.
const ProtocolVersion = 1

// Message types used by the exec protocol.
const (
	TypeVfsReady     = "vfs_ready"
	TypeVfsError     = "vfs_error"
	TypeExecRequest  = "exec_request"
	TypeExecOutput   = "exec_output"
	TypeExecResponse = "exec_response"
	TypeExecWindow   = "exec_window"
	TypeStdinData    = "stdin_data"
	TypeStdinWindow  = "stdin_window"
	TypePtyResize    = "pty_resize"
	TypeError        = "error"
)

var (
	// ErrFrameTooLarge is returned for a frame whose length exceeds MaxFrame.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrBadMessage is wrapped by errors for well-formed CBOR that is not a
	// protocol message.
	ErrBadMessage = errors.New("bad message")
)

// Message is one protocol message.
type Message struct {
	Type    string
	ID      uint32
	Payload map[string]any
}

// ReadFrame reads one length-prefixed frame. It returns io.EOF only when the
// stream ends cleanly before a frame starts, io.ErrUnexpectedEOF for a
// truncated frame and ErrFrameTooLarge (without reading the body) when the
// announced length exceeds MaxFrame.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrFrameTooLarge, n, MaxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// AppendFrame appends the length prefix and payload to dst.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrFrameTooLarge, len(payload), MaxFrame)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...), nil
}

// EncodeMessage returns the CBOR encoding of m (without the length prefix).
func EncodeMessage(m Message) ([]byte, error) {
	p := m.Payload
	if p == nil {
		p = map[string]any{}
	}
	var e encoder
	e.head(majorMap, 4)
	e.text("v")
	e.head(majorUint, ProtocolVersion)
	e.text("t")
	e.text(m.Type)
	e.text("id")
	e.head(majorUint, uint64(m.ID))
	e.text("p")
	if err := e.value(p); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// EncodeFrame returns m as a complete frame (length prefix + CBOR).
func EncodeFrame(m Message) ([]byte, error) {
	body, err := EncodeMessage(m)
	if err != nil {
		return nil, err
	}
	return AppendFrame(make([]byte, 0, 4+len(body)), body)
}

// DecodeMessage parses the CBOR body of one frame.
func DecodeMessage(body []byte) (Message, error) {
	raw, err := UnmarshalCBOR(body)
	if err != nil {
		return Message{}, err
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return Message{}, fmt.Errorf("%w: top level is %T, not a map", ErrBadMessage, raw)
	}
	if v, ok := obj["v"]; ok {
		if n, ok := v.(uint64); !ok || n != ProtocolVersion {
			return Message{}, fmt.Errorf("%w: unsupported version %v", ErrBadMessage, v)
		}
	}
	t, ok := obj["t"].(string)
	if !ok || t == "" {
		return Message{}, fmt.Errorf("%w: missing type", ErrBadMessage)
	}
	var id uint32
	if rawID, present := obj["id"]; present {
		n, ok := rawID.(uint64)
		if !ok || n > math.MaxUint32 {
			return Message{}, fmt.Errorf("%w: id %v is not a uint32", ErrBadMessage, rawID)
		}
		id = uint32(n)
	}
	m := Message{Type: t, ID: id, Payload: map[string]any{}}
	switch p := obj["p"].(type) {
	case nil:
	case map[string]any:
		m.Payload = p
	default:
		return Message{}, fmt.Errorf("%w: payload is %T, not a map", ErrBadMessage, obj["p"])
	}
	return m, nil
}

// ReadMessage reads and decodes one frame.
func ReadMessage(r io.Reader) (Message, error) {
	body, err := ReadFrame(r)
	if err != nil {
		return Message{}, err
	}
	return DecodeMessage(body)
}

// ---------------------------------------------------------------- payload helpers

// ExecRequest is the decoded payload of an exec_request.
type ExecRequest struct {
	Cmd          string
	Argv         []string
	Env          []string
	Cwd          string
	Stdin        bool
	Pty          bool
	StdoutWindow uint64
	StderrWindow uint64
}

// ParseExecRequest validates and extracts an exec_request payload.
func ParseExecRequest(p map[string]any) (ExecRequest, error) {
	var r ExecRequest
	var ok bool
	if r.Cmd, ok = p["cmd"].(string); !ok || r.Cmd == "" {
		return r, fmt.Errorf("%w: exec_request needs a non-empty cmd", ErrBadMessage)
	}
	var err error
	if r.Argv, err = stringList(p, "argv"); err != nil {
		return r, err
	}
	if r.Env, err = stringList(p, "env"); err != nil {
		return r, err
	}
	if v, present := p["cwd"]; present && v != nil && v != (Undefined{}) {
		if r.Cwd, ok = v.(string); !ok {
			return r, fmt.Errorf("%w: cwd is %T", ErrBadMessage, v)
		}
	}
	if r.Stdin, err = optBool(p, "stdin"); err != nil {
		return r, err
	}
	if r.Pty, err = optBool(p, "pty"); err != nil {
		return r, err
	}
	r.StdoutWindow = optUint(p, "stdout_window")
	r.StderrWindow = optUint(p, "stderr_window")
	return r, nil
}

func stringList(p map[string]any, key string) ([]string, error) {
	v, present := p[key]
	if !present || v == nil || v == (Undefined{}) {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s is %T, not an array", ErrBadMessage, key, v)
	}
	out := make([]string, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s[%d] is %T, not a string", ErrBadMessage, key, i, item)
		}
		out[i] = s
	}
	return out, nil
}

func optBool(p map[string]any, key string) (bool, error) {
	v, present := p[key]
	if !present || v == nil || v == (Undefined{}) {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%w: %s is %T, not a bool", ErrBadMessage, key, v)
	}
	return b, nil
}

// optUint returns a non-negative integer field (0 when absent or invalid).
func optUint(p map[string]any, key string) uint64 {
	switch v := p[key].(type) {
	case uint64:
		return v
	case float64:
		if v > 0 && v < 1<<53 {
			return uint64(v)
		}
	}
	return 0
}
