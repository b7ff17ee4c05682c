package gssconf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrLossy is returned for a file whose encoding cannot be decoded and
// re-encoded byte for byte (e.g. a broken UTF-16 surrogate).
var ErrLossy = errors.New("file cannot be edited without changing bytes other than the setting")

// encoding is a byte-order mark the ini parser honours. It converts
// UTF-32 and UTF-16 files with a BOM; anything else is read as UTF-8.
type encoding struct {
	bom   []byte
	width int // bytes per code unit: 1, 2 or 4
	order byteOrder
}

type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// Longest BOMs first: the UTF-32LE BOM starts with the UTF-16LE one.
var encodings = []encoding{
	{[]byte{0x00, 0x00, 0xFE, 0xFF}, 4, binary.BigEndian},
	{[]byte{0xFF, 0xFE, 0x00, 0x00}, 4, binary.LittleEndian},
	{[]byte{0xEF, 0xBB, 0xBF}, 1, nil},
	{[]byte{0xFE, 0xFF}, 2, binary.BigEndian},
	{[]byte{0xFF, 0xFE}, 2, binary.LittleEndian},
}

func detect(b []byte) encoding {
	for _, e := range encodings {
		if bytes.HasPrefix(b, e.bom) {
			return e
		}
	}
	return encoding{width: 1}
}

// decode returns the text of b as UTF-8 (without BOM).
func (e encoding) decode(b []byte) ([]byte, error) {
	body := b[len(e.bom):]
	if e.width == 1 {
		return body, nil
	}
	if len(body)%e.width != 0 {
		return nil, ErrLossy
	}
	var runes []rune
	switch e.width {
	case 2:
		units := make([]uint16, len(body)/2)
		for i := range units {
			units[i] = e.order.Uint16(body[2*i:])
		}
		runes = utf16.Decode(units)
	case 4:
		runes = make([]rune, len(body)/4)
		for i := range runes {
			runes[i] = rune(e.order.Uint32(body[4*i:]))
		}
	}
	out := make([]byte, 0, len(runes))
	for _, r := range runes {
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}

// encode is the inverse of decode, BOM included.
func (e encoding) encode(text []byte) []byte {
	out := append([]byte(nil), e.bom...)
	if e.width == 1 {
		return append(out, text...)
	}
	for _, r := range string(text) {
		switch e.width {
		case 2:
			for _, u := range utf16.Encode([]rune{r}) {
				out = e.order.AppendUint16(out, u)
			}
		case 4:
			out = e.order.AppendUint32(out, uint32(r))
		}
	}
	return out
}
