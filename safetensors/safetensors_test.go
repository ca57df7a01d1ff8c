package safetensors

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []Tensor{
		{Name: "b.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, -6.5}},
		{Name: "a.bias", Shape: []int{1}, Data: []float32{0.25}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	hl := binary.LittleEndian.Uint64(buf.Bytes()[:8])
	if hl%8 != 0 || !strings.Contains(string(buf.Bytes()[8:8+hl]), `"dtype":"F32"`) {
		t.Fatalf("header %q", buf.Bytes()[8:8+hl])
	}
	out, meta, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" || len(out) != 2 || out[0].Name != "a.bias" || out[1].Data[5] != -6.5 || out[1].Shape[1] != 3 {
		t.Fatalf("read back %+v %v", out, meta)
	}
}

func TestRejects(t *testing.T) {
	if err := Write(&bytes.Buffer{}, []Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1}}}, nil); err == nil {
		t.Error("shape mismatch written")
	}
	var buf bytes.Buffer
	Write(&buf, []Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1, 2, 3}}}, nil)
	b := buf.Bytes()
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-1],
		"short":     b[:4],
		"huge":      append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, b[8:]...),
	} {
		if _, _, err := Read(bytes.NewReader(bad)); err == nil {
			t.Errorf("%s file read without error", name)
		}
	}
}
