package guestagent

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

// Frames produced by Gondolin 0.12.0's host (encodeFrame + build* helpers in
// dist/src/sandbox/virtio-protocol.js, cbor2 encoder), captured once.
var hostFrames = map[string]string{
	"exec":        "0000007da461760161746c657865635f72657175657374626964076170a863636d64672f62696e2f7368646172677682622d63676563686f20686963656e768263413d3165423d74776f63637764642f746d7065737464696ef563707479f46d7374646f75745f77696e646f771a000100006d7374646572725f77696e646f7700",
	"stdin":       "0000002ea461760161746a737464696e5f646174616269641affffffff6170a264646174614768c3a96c6c6f0a63656f66f5",
	"stdin_noeof": "0000001ea461760161746a737464696e5f64617461626964016170a1646461746140",
	"resize":      "00000026a461760161746a7074795f726573697a65626964036170a264726f7773181864636f6c731850",
	"window":      "00000025a461760161746b657865635f77696e646f77626964036170a1667374646f75741a00100000",
}

func hostFrame(t *testing.T, name string) Message {
	t.Helper()
	raw, err := hex.DecodeString(hostFrames[name])
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func TestDecodeHostFrames(t *testing.T) {
	m := hostFrame(t, "exec")
	if m.Type != TypeExecRequest || m.ID != 7 {
		t.Fatalf("got %+v", m)
	}
	req, err := ParseExecRequest(m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := ExecRequest{Cmd: "/bin/sh", Argv: []string{"-c", "echo hi"}, Env: []string{"A=1", "B=two"}, Cwd: "/tmp", Stdin: true, StdoutWindow: 65536}
	if !reflect.DeepEqual(req, want) {
		t.Fatalf("exec request\n got %+v\nwant %+v", req, want)
	}

	m = hostFrame(t, "stdin")
	if m.Type != TypeStdinData || m.ID != math.MaxUint32 {
		t.Fatalf("got %+v", m)
	}
	if d, _ := m.Payload["data"].([]byte); string(d) != "héllo\n" {
		t.Fatalf("stdin data %q", d)
	}
	if eof, _ := m.Payload["eof"].(bool); !eof {
		t.Fatal("eof not set")
	}
	m = hostFrame(t, "stdin_noeof")
	if d, ok := m.Payload["data"].([]byte); !ok || len(d) != 0 {
		t.Fatalf("empty stdin data: %#v", m.Payload["data"])
	}
	if _, ok := m.Payload["eof"]; ok {
		t.Fatal("unexpected eof")
	}
	m = hostFrame(t, "resize")
	if optUint(m.Payload, "rows") != 24 || optUint(m.Payload, "cols") != 80 {
		t.Fatalf("resize %+v", m.Payload)
	}
	m = hostFrame(t, "window")
	if m.Type != TypeExecWindow || optUint(m.Payload, "stdout") != 1<<20 {
		t.Fatalf("window %+v", m)
	}
}

func TestEncodeMatchesHostEncoding(t *testing.T) {
	// Our encoder writes keys in sorted order; the host writes insertion
	// order. For maps whose insertion order is sorted the bytes must agree.
	frame, err := EncodeFrame(Message{Type: TypePtyResize, ID: 3, Payload: map[string]any{"cols": 80, "rows": 24}})
	if err != nil {
		t.Fatal(err)
	}
	// host order is rows, cols: compare decoded values instead of bytes.
	got, err := ReadMessage(bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	want := hostFrame(t, "resize")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
	frame, err = EncodeFrame(Message{Type: TypeExecWindow, ID: 3, Payload: map[string]any{"stdout": uint32(1 << 20)}})
	if err != nil {
		t.Fatal(err)
	}
	if h := hex.EncodeToString(frame); h != hostFrames["window"] {
		t.Fatalf("bytes differ\n got %s\nwant %s", h, hostFrames["window"])
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		{Type: TypeVfsReady, Payload: map[string]any{}},
		{Type: TypeExecOutput, ID: 1, Payload: map[string]any{"stream": "stdout", "data": []byte("hello\n")}},
		{Type: TypeExecOutput, ID: 2, Payload: map[string]any{"stream": "stderr", "data": bytes.Repeat([]byte{0xff, 0}, 70000)}},
		{Type: TypeExecResponse, ID: math.MaxUint32, Payload: map[string]any{"exit_code": -1, "signal": 9}},
		{Type: TypeError, ID: 5, Payload: map[string]any{"code": "unsupported", "message": "nope ✓"}},
		{Type: TypeExecRequest, ID: 6, Payload: map[string]any{
			"cmd": "x", "argv": []string{"a", ""}, "stdin": false, "nested": map[string]any{"f": 1.5, "n": nil, "l": []any{int64(-300), uint64(1) << 40, true}},
		}},
	}
	var stream bytes.Buffer
	for _, m := range msgs {
		frame, err := EncodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		stream.Write(frame)
	}
	for i, want := range msgs {
		got, err := ReadMessage(&stream)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got.Type != want.Type || got.ID != want.ID || len(got.Payload) != len(want.Payload) {
			t.Fatalf("message %d: got %+v want %+v", i, got, want)
		}
		// re-encoding the decoded form must give the same bytes
		a, _ := EncodeMessage(want)
		b, err := EncodeMessage(got)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("message %d: re-encoding differs (%v)", i, err)
		}
	}
	if _, err := ReadMessage(&stream); err != io.EOF {
		t.Fatalf("want io.EOF at end, got %v", err)
	}
}

func TestCBORValues(t *testing.T) {
	cases := []struct {
		hex  string
		want any
	}{
		{"00", uint64(0)},
		{"17", uint64(23)},
		{"1818", uint64(24)},
		{"1b ffffffffffffffff", uint64(math.MaxUint64)},
		{"20", int64(-1)},
		{"3903e7", int64(-1000)},
		{"f4", false}, {"f5", true}, {"f6", nil}, {"f7", Undefined{}},
		{"f93c00", 1.0}, {"f9c400", -4.0}, {"f97c00", math.Inf(1)},
		{"fa47c35000", 100000.0},
		{"fb3ff199999999999a", 1.1},
		{"40", []byte{}},
		{"5f42010243030405ff", []byte{1, 2, 3, 4, 5}},
		{"7f657374726561646d696e67ff", "streaming"},
		{"6449455446", "IETF"},
		{"83010203", []any{uint64(1), uint64(2), uint64(3)}},
		{"9f018202039f0405ffff", []any{uint64(1), []any{uint64(2), uint64(3)}, []any{uint64(4), uint64(5)}}},
		{"bf61610161629f0203ffff", map[string]any{"a": uint64(1), "b": []any{uint64(2), uint64(3)}}},
		{"a201020304", map[string]any{"1": uint64(2), "3": uint64(4)}},
		{"c11a514b67b0", uint64(1363896240)}, // tag 1 ignored
	}
	for _, c := range cases {
		raw, err := hex.DecodeString(strings.ReplaceAll(c.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalCBOR(raw)
		if err != nil {
			t.Errorf("%s: %v", c.hex, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v want %#v", c.hex, got, c.want)
		}
	}
	// encoder: shortest forms
	enc := []struct {
		v    any
		want string
	}{
		{0, "00"}, {23, "17"}, {24, "1818"}, {255, "18ff"}, {256, "190100"}, {65536, "1a00010000"},
		{uint64(1) << 32, "1b0000000100000000"}, {-1, "20"}, {-25, "3818"}, {"", "60"}, {[]byte{}, "40"},
		{2.0, "02"}, {1.5, "fa3fc00000"}, {1.1, "fb3ff199999999999a"},
	}
	for _, c := range enc {
		b, err := MarshalCBOR(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(b); h != c.want {
			t.Errorf("encode %#v: got %s want %s", c.v, h, c.want)
		}
	}
	if _, err := MarshalCBOR(struct{}{}); err == nil {
		t.Error("encoding an unsupported type must fail")
	}
	if _, err := MarshalCBOR("\xff"); err == nil {
		t.Error("encoding invalid UTF-8 text must fail")
	}
}

func TestMalformed(t *testing.T) {
	bad := map[string]string{
		"empty":            "",
		"truncated uint":   "19 01",
		"truncated bytes":  "45 0102",
		"trailing":         "00 00",
		"reserved info":    "1c",
		"stray break":      "ff",
		"break in map val": "bf 6161 ff",
		"bad utf8":         "62 c328",
		"huge array":       "9b 7fffffffffffffff",
		"huge map":         "bb 7fffffffffffffff",
		"huge bytes":       "5b ffffffffffffffff",
		"negint overflow":  "3b ffffffffffffffff",
		"array key":        "a1 80 00",
		"indef int":        "1f",
		"bad chunk":        "5f 61 61 ff",
		"simple 24 small":  "f8 10",
		"unassigned":       "f0",
		"deep":             strings.Repeat("81", maxDepth+2) + "00",
	}
	for name, h := range bad {
		raw, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := UnmarshalCBOR(raw); !errors.Is(err, ErrCBOR) {
			t.Errorf("%s: want ErrCBOR, got %v", name, err)
		}
	}
	notMessages := map[string]any{
		"not a map":     []any{uint64(1)},
		"no type":       map[string]any{"v": 1, "id": 1},
		"type not text": map[string]any{"v": 1, "t": 5},
		"version 2":     map[string]any{"v": 2, "t": "x"},
		"id too big":    map[string]any{"v": 1, "t": "x", "id": uint64(1) << 32},
		"negative id":   map[string]any{"v": 1, "t": "x", "id": -1},
		"payload list":  map[string]any{"v": 1, "t": "x", "p": []any{}},
	}
	for name, v := range notMessages {
		raw, err := MarshalCBOR(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeMessage(raw); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: want ErrBadMessage, got %v", name, err)
		}
	}
	for name, p := range map[string]map[string]any{
		"no cmd":       {},
		"empty cmd":    {"cmd": ""},
		"argv not arr": {"cmd": "x", "argv": "y"},
		"argv ints":    {"cmd": "x", "argv": []any{uint64(1)}},
		"env ints":     {"cmd": "x", "env": []any{true}},
		"cwd int":      {"cmd": "x", "cwd": uint64(1)},
		"stdin text":   {"cmd": "x", "stdin": "yes"},
	} {
		if _, err := ParseExecRequest(p); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: want ErrBadMessage, got %v", name, err)
		}
	}
}

func TestFrameLimits(t *testing.T) {
	// Exactly MaxFrame is fine for the framing layer.
	hdr := binary.BigEndian.AppendUint32(nil, MaxFrame)
	body, err := ReadFrame(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, MaxFrame))))
	if err != nil || len(body) != MaxFrame {
		t.Fatalf("MaxFrame frame: len %d, %v", len(body), err)
	}
	// One byte more is rejected before the body is read.
	hdr = binary.BigEndian.AppendUint32(nil, MaxFrame+1)
	r := &countingReader{r: io.MultiReader(bytes.NewReader(hdr), strings.NewReader("never read"))}
	if _, err := ReadFrame(r); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("want ErrFrameTooLarge, got %v", err)
	}
	if r.n != 4 {
		t.Fatalf("read %d bytes of an oversize frame, want only the 4-byte header", r.n)
	}
	hdr = binary.BigEndian.AppendUint32(nil, math.MaxUint32)
	if _, err := ReadFrame(bytes.NewReader(hdr)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("want ErrFrameTooLarge, got %v", err)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("AppendFrame: want ErrFrameTooLarge, got %v", err)
	}
	if _, err := EncodeFrame(Message{Type: TypeExecOutput, Payload: map[string]any{"data": make([]byte, MaxFrame)}}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("EncodeFrame: want ErrFrameTooLarge, got %v", err)
	}
	// Truncation.
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0})); err != io.ErrUnexpectedEOF {
		t.Fatalf("short header: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 5, 1, 2})); err != io.ErrUnexpectedEOF {
		t.Fatalf("short body: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("empty stream: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzReadMessage(f *testing.F) {
	for _, h := range hostFrames {
		raw, _ := hex.DecodeString(h)
		f.Add(raw)
	}
	f.Add([]byte{0, 0, 0, 1, 0xff})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 0x9f, 0x9f, 0x9f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			body, err := ReadFrame(r)
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected frame error %v", err)
				}
				return
			}
			if len(body) > MaxFrame {
				t.Fatalf("frame of %d bytes accepted", len(body))
			}
			m, err := DecodeMessage(body)
			if err != nil {
				if !errors.Is(err, ErrCBOR) && !errors.Is(err, ErrBadMessage) {
					t.Fatalf("unexpected decode error %v", err)
				}
				continue
			}
			// Whatever decodes must re-encode and decode to the same thing.
			frame, err := EncodeFrame(m)
			if err != nil {
				if errors.Is(err, ErrFrameTooLarge) {
					continue
				}
				t.Fatalf("re-encode %+v: %v", m, err)
			}
			m2, err := ReadMessage(bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("decode re-encoded: %v", err)
			}
			if !reflect.DeepEqual(normalizeFloats(m.Payload), normalizeFloats(m2.Payload)) || m.Type != m2.Type || m.ID != m2.ID {
				t.Fatalf("round trip changed message\n%#v\n%#v", m, m2)
			}
			if m.Type == TypeExecRequest {
				_, _ = ParseExecRequest(m.Payload)
			}
		}
	})
}

// normalizeFloats maps values whose encoding legitimately changes on
// re-encoding (integral floats become integers, NaN != NaN) to comparable
// forms.
func normalizeFloats(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) {
			return "NaN"
		}
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			if x < 0 {
				return int64(x)
			}
			return uint64(x)
		}
		return x
	case int64:
		if x >= 0 {
			return uint64(x)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = normalizeFloats(x[i])
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = normalizeFloats(e)
		}
		return out
	}
	return v
}
