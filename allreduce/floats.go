package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The wire carries float32 little-endian. On little-endian machines the
// conversions are plain memory copies; elsewhere (and for misaligned input)
// they go value by value.

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// asFloats views b (len a multiple of 4, 4-aligned) as float32s, or returns
// nil if it cannot.
func asFloats(b []byte) []float32 {
	if !littleEndian || len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// encodeFloats writes src little-endian into dst (len(dst) >= 4*len(src)).
func encodeFloats(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	if littleEndian && len(src) > 0 {
		copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// addFloats adds the little-endian float32 values of src into dst.
func addFloats(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	if s := asFloats(src); s != nil {
		for i := range dst {
			dst[i] += s[i]
		}
		return
	}
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// copyFloats decodes the little-endian float32 values of src into dst.
func copyFloats(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	if s := asFloats(src); s != nil {
		copy(dst, s)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// Slow twins, value by value, that the tests hold the fast paths equal to.
func addFloatsSlow(dst []float32, src []byte) {
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
