package guestagent

// A small CBOR (RFC 8949) encoder and decoder for the subset the Gondolin
// control protocol uses: unsigned and negative integers, byte strings, text
// strings, arrays, maps, booleans, null/undefined and floats. Tags are
// accepted on input and ignored. Indefinite-length items are accepted on
// input; the encoder always writes definite lengths with the shortest
// argument encoding (what cbor2, the host's library, writes as well).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"unicode/utf8"
)

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 64

// ErrCBOR is wrapped by every decoding error.
var ErrCBOR = errors.New("cbor")

func cborErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCBOR, fmt.Sprintf(format, args...))
}

// Undefined is the decoded form of the CBOR "undefined" simple value.
type Undefined struct{}

const (
	majorUint   = 0
	majorNegint = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorTag    = 6
	majorSimple = 7
)

// ---------------------------------------------------------------- encoding

type encoder struct{ buf []byte }

func (e *encoder) head(major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		e.buf = append(e.buf, m|byte(n))
	case n <= math.MaxUint8:
		e.buf = append(e.buf, m|24, byte(n))
	case n <= math.MaxUint16:
		e.buf = append(e.buf, m|25)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
	case n <= math.MaxUint32:
		e.buf = append(e.buf, m|26)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	default:
		e.buf = append(e.buf, m|27)
		e.buf = binary.BigEndian.AppendUint64(e.buf, n)
	}
}

func (e *encoder) int(v int64) {
	if v >= 0 {
		e.head(majorUint, uint64(v))
	} else {
		e.head(majorNegint, uint64(-(v + 1)))
	}
}

func (e *encoder) text(s string) {
	e.head(majorText, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) value(v any) error {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, 0xf6)
	case Undefined:
		e.buf = append(e.buf, 0xf7)
	case bool:
		if x {
			e.buf = append(e.buf, 0xf5)
		} else {
			e.buf = append(e.buf, 0xf4)
		}
	case int:
		e.int(int64(x))
	case int8:
		e.int(int64(x))
	case int16:
		e.int(int64(x))
	case int32:
		e.int(int64(x))
	case int64:
		e.int(x)
	case uint:
		e.head(majorUint, uint64(x))
	case uint8:
		e.head(majorUint, uint64(x))
	case uint16:
		e.head(majorUint, uint64(x))
	case uint32:
		e.head(majorUint, uint64(x))
	case uint64:
		e.head(majorUint, x)
	case float32:
		e.float(float64(x))
	case float64:
		e.float(x)
	case string:
		if !utf8.ValidString(x) {
			return fmt.Errorf("cbor encode: text string is not valid UTF-8")
		}
		e.text(x)
	case []byte:
		e.head(majorBytes, uint64(len(x)))
		e.buf = append(e.buf, x...)
	case []string:
		e.head(majorArray, uint64(len(x)))
		for _, s := range x {
			if err := e.value(s); err != nil {
				return err
			}
		}
	case []any:
		e.head(majorArray, uint64(len(x)))
		for _, item := range x {
			if err := e.value(item); err != nil {
				return err
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		e.head(majorMap, uint64(len(x)))
		for _, k := range keys {
			e.text(k)
			if err := e.value(x[k]); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("cbor encode: unsupported type %T", v)
	}
	return nil
}

func (e *encoder) float(f float64) {
	// Integral floats are written as integers, like cbor2 does for JS numbers.
	if f == math.Trunc(f) && !math.IsInf(f, 0) && math.Abs(f) < 1<<53 {
		e.int(int64(f))
		return
	}
	if float64(float32(f)) == f || math.IsNaN(f) {
		e.buf = append(e.buf, 0xfa)
		e.buf = binary.BigEndian.AppendUint32(e.buf, math.Float32bits(float32(f)))
		return
	}
	e.buf = append(e.buf, 0xfb)
	e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(f))
}

// MarshalCBOR encodes v (see encoder.value for the supported types).
func MarshalCBOR(v any) ([]byte, error) {
	var e encoder
	if err := e.value(v); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// ---------------------------------------------------------------- decoding

type decoder struct {
	data []byte
	off  int
}

// UnmarshalCBOR decodes exactly one CBOR data item from data. Maps decode to
// map[string]any (integer keys are converted to their decimal text, as the
// host's normalize() does), arrays to []any, unsigned integers to uint64,
// negative integers to int64, byte strings to []byte, text to string,
// floats to float64, null to nil and undefined to Undefined{}.
func UnmarshalCBOR(data []byte) (any, error) {
	d := decoder{data: data}
	v, err := d.item(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(d.data) {
		return nil, cborErr("%d trailing bytes", len(d.data)-d.off)
	}
	return v, nil
}

func (d *decoder) need(n uint64) error {
	if n > uint64(len(d.data)-d.off) {
		return cborErr("unexpected end of data")
	}
	return nil
}

// breakMarker is returned by item when it reads the 0xff "break" byte.
type breakMarker struct{}

func (d *decoder) head() (major byte, info byte, arg uint64, err error) {
	if err = d.need(1); err != nil {
		return
	}
	b := d.data[d.off]
	d.off++
	major, info = b>>5, b&0x1f
	switch {
	case info < 24:
		arg = uint64(info)
	case info == 24:
		if err = d.need(1); err != nil {
			return
		}
		arg = uint64(d.data[d.off])
		d.off++
	case info == 25:
		if err = d.need(2); err != nil {
			return
		}
		arg = uint64(binary.BigEndian.Uint16(d.data[d.off:]))
		d.off += 2
	case info == 26:
		if err = d.need(4); err != nil {
			return
		}
		arg = uint64(binary.BigEndian.Uint32(d.data[d.off:]))
		d.off += 4
	case info == 27:
		if err = d.need(8); err != nil {
			return
		}
		arg = binary.BigEndian.Uint64(d.data[d.off:])
		d.off += 8
	case info == 31:
		// indefinite length / break; handled by the caller
	default:
		err = cborErr("reserved additional info %d", info)
	}
	return
}

func (d *decoder) item(depth int) (any, error) {
	if depth > maxDepth {
		return nil, cborErr("nesting deeper than %d", maxDepth)
	}
	major, info, arg, err := d.head()
	if err != nil {
		return nil, err
	}
	indefinite := info == 31
	switch major {
	case majorUint:
		if indefinite {
			return nil, cborErr("indefinite integer")
		}
		return arg, nil
	case majorNegint:
		if indefinite {
			return nil, cborErr("indefinite integer")
		}
		if arg > math.MaxInt64 {
			return nil, cborErr("negative integer out of range")
		}
		return -1 - int64(arg), nil
	case majorBytes, majorText:
		var out []byte
		if indefinite {
			out = []byte{}
			for {
				m, inf, n, err := d.head()
				if err != nil {
					return nil, err
				}
				if m == majorSimple && inf == 31 {
					break
				}
				if m != major || inf == 31 {
					return nil, cborErr("bad chunk in indefinite string")
				}
				if err := d.need(n); err != nil {
					return nil, err
				}
				out = append(out, d.data[d.off:d.off+int(n)]...)
				d.off += int(n)
			}
		} else {
			if err := d.need(arg); err != nil {
				return nil, err
			}
			out = make([]byte, arg)
			copy(out, d.data[d.off:d.off+int(arg)])
			d.off += int(arg)
		}
		if major == majorText {
			if !utf8.Valid(out) {
				return nil, cborErr("text string is not valid UTF-8")
			}
			return string(out), nil
		}
		return out, nil
	case majorArray:
		var out []any
		if !indefinite {
			// every element takes at least one byte
			if err := d.need(arg); err != nil {
				return nil, err
			}
			out = make([]any, 0, arg)
		} else {
			out = []any{}
		}
		for i := uint64(0); indefinite || i < arg; i++ {
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			if _, ok := v.(breakMarker); ok {
				if !indefinite {
					return nil, cborErr("unexpected break")
				}
				break
			}
			out = append(out, v)
		}
		return out, nil
	case majorMap:
		if !indefinite {
			if arg > uint64(len(d.data)) {
				return nil, cborErr("unexpected end of data")
			}
			if err := d.need(arg * 2); err != nil {
				return nil, err
			}
		}
		out := map[string]any{}
		for i := uint64(0); indefinite || i < arg; i++ {
			k, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			if _, ok := k.(breakMarker); ok {
				if !indefinite {
					return nil, cborErr("unexpected break")
				}
				break
			}
			var key string
			switch kk := k.(type) {
			case string:
				key = kk
			case uint64:
				key = fmt.Sprint(kk)
			case int64:
				key = fmt.Sprint(kk)
			default:
				return nil, cborErr("unsupported map key type %T", k)
			}
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			if _, ok := v.(breakMarker); ok {
				return nil, cborErr("break in place of a map value")
			}
			out[key] = v
		}
		return out, nil
	case majorTag:
		if indefinite {
			return nil, cborErr("indefinite tag")
		}
		v, err := d.item(depth + 1)
		if err != nil {
			return nil, err
		}
		if _, ok := v.(breakMarker); ok {
			return nil, cborErr("unexpected break")
		}
		return v, nil
	default: // majorSimple
		switch info {
		case 20:
			return false, nil
		case 21:
			return true, nil
		case 22:
			return nil, nil
		case 23:
			return Undefined{}, nil
		case 24:
			if arg < 32 {
				return nil, cborErr("invalid simple value encoding")
			}
			return nil, cborErr("unsupported simple value %d", arg)
		case 25:
			return halfToFloat(uint16(arg)), nil
		case 26:
			return float64(math.Float32frombits(uint32(arg))), nil
		case 27:
			return math.Float64frombits(arg), nil
		case 31:
			if depth == 0 {
				return nil, cborErr("unexpected break")
			}
			return breakMarker{}, nil
		default:
			return nil, cborErr("unsupported simple value %d", info)
		}
	}
}

func halfToFloat(h uint16) float64 {
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	var f float64
	switch exp {
	case 0:
		f = math.Ldexp(mant, -24)
	case 31:
		if mant == 0 {
			f = math.Inf(1)
		} else {
			f = math.NaN()
		}
	default:
		f = math.Ldexp(mant+1024, exp-25)
	}
	if h&0x8000 != 0 {
		f = -f
	}
	return f
}
