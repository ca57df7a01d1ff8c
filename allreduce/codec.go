package allreduce

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// codecName is the gRPC content-subtype our client streams ask for. The
// server picks the codec by that name, so the coordinator's services on the
// same grpc.Server keep the ordinary proto codec.
const codecName = "gencluster-allreduce"

func init() { encoding.RegisterCodecV2(frameCodec{}) }

// outFrame is what the sender hands to SendMsg: the header of a RingFrame and
// the float32 values of its data field.
//
// With release set (and on little-endian hosts), Marshal does not copy the
// values: the message it returns is a small pooled header buffer followed by
// a buffer that aliases data itself, and gRPC calls release.Put once its
// transport has written that buffer out; until then data must not change.
// Small chunks, and every chunk without release, are copied into one pooled
// buffer (whose release is reported to release as well, if set). Either way
// release.Put runs exactly once per message, in the order they were sent.
type outFrame struct {
	jobID      string
	generation uint64
	senderRank int32
	seq        uint64
	step       uint32
	offset     uint64
	length     uint64
	data       []float32
	mac        []byte // the hello's signature (Ring.SendKey), or none

	release *releaseCounter
	view    []byte // scratch for the aliasing buffer's *[]byte
}

// Field numbers of gencluster.v1.RingFrame (api/allreduce.proto).
const (
	fJobID      protowire.Number = 1
	fGeneration protowire.Number = 2
	fSenderRank protowire.Number = 3
	fSeq        protowire.Number = 4
	fStep       protowire.Number = 5
	fOffset     protowire.Number = 6
	fLength     protowire.Number = 7
	fData       protowire.Number = 8
	fPad        protowire.Number = 9
	fMac        protowire.Number = 10
)

// frameCodec encodes RingFrames in the ordinary protobuf wire format, so any
// protobuf client can talk to the service, but without allocating per frame:
// Marshal writes an *outFrame into a pooled buffer and Unmarshal decodes into
// a reused *pb.RingFrame, keeping its Data capacity and JobId string.
// Anything else goes through the proto package.
type frameCodec struct{}

func (frameCodec) Name() string { return codecName }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*outFrame)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return nil, fmt.Errorf("allreduce codec: cannot marshal %T", v)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	dataLen := 4 * len(f.data)
	head := protowire.SizeTag(fJobID) + protowire.SizeBytes(len(f.jobID)) +
		protowire.SizeTag(fGeneration) + protowire.SizeVarint(f.generation) +
		protowire.SizeTag(fSenderRank) + protowire.SizeVarint(uint64(f.senderRank)) +
		protowire.SizeTag(fSeq) + protowire.SizeVarint(f.seq) +
		protowire.SizeTag(fStep) + protowire.SizeVarint(uint64(f.step)) +
		protowire.SizeTag(fOffset) + protowire.SizeVarint(f.offset) +
		protowire.SizeTag(fLength) + protowire.SizeVarint(f.length)
	if len(f.mac) > 0 {
		head += protowire.SizeTag(fMac) + protowire.SizeBytes(len(f.mac))
	}
	dataHead := protowire.SizeTag(fData) + protowire.SizeVarint(uint64(dataLen))
	// pad (tag, length 0..3, that many zero bytes) makes the bytes before the
	// data 3 mod 4, so with gRPC's 5-byte message prefix the data starts
	// 4-aligned in the receiver's first transport buffer and, the transport
	// cutting 16 KiB frames, at the start of every later one.
	pad := (3 - (head+2+dataHead)%4 + 4) % 4
	pre := head + 2 + pad + dataHead
	alias := f.release != nil && littleEndian && dataLen >= minAliasBytes
	size := pre
	if !alias {
		size += dataLen
	}
	// At least minPooledBytes, so that mem.NewBuffer keeps it pooled (and
	// reports its release) rather than leaving it to the garbage collector.
	bp := bufferPool.Get(max(size, minPooledBytes))
	b := (*bp)[:0]
	b = protowire.AppendTag(b, fJobID, protowire.BytesType)
	b = protowire.AppendString(b, f.jobID)
	b = protowire.AppendTag(b, fGeneration, protowire.VarintType)
	b = protowire.AppendVarint(b, f.generation)
	b = protowire.AppendTag(b, fSenderRank, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(f.senderRank))
	b = protowire.AppendTag(b, fSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, f.seq)
	b = protowire.AppendTag(b, fStep, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(f.step))
	b = protowire.AppendTag(b, fOffset, protowire.VarintType)
	b = protowire.AppendVarint(b, f.offset)
	b = protowire.AppendTag(b, fLength, protowire.VarintType)
	b = protowire.AppendVarint(b, f.length)
	if len(f.mac) > 0 {
		b = protowire.AppendTag(b, fMac, protowire.BytesType)
		b = protowire.AppendBytes(b, f.mac)
	}
	b = protowire.AppendTag(b, fPad, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(pad))
	for range pad {
		b = append(b, 0)
	}
	b = protowire.AppendTag(b, fData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(dataLen))
	if alias {
		*bp = b
		f.view = unsafe.Slice((*byte)(unsafe.Pointer(&f.data[0])), dataLen)
		return mem.BufferSlice{mem.NewBuffer(bp, bufferPool), mem.NewBuffer(&f.view, f.release)}, nil
	}
	n := len(b)
	b = b[:n+dataLen]
	encodeFloats(b[n:], f.data)
	*bp = b
	var pool mem.BufferPool = bufferPool
	if f.release != nil {
		pool = f.release
	}
	return mem.BufferSlice{mem.NewBuffer(bp, pool)}, nil
}

const (
	// minAliasBytes: smaller chunks are copied (cheaper than a second buffer).
	minAliasBytes = 4 << 10
	// minPooledBytes is above mem's pooling threshold (1 KiB).
	minPooledBytes = 2 << 10
)

// releaseCounter is the mem.BufferPool that outFrame messages report their
// release to: Put counts (the sender waits on the count before a buffer may
// change) and returns buffers of bufferPool's to it. Aliased buffers are the
// caller's memory and are never pooled.
type releaseCounter struct {
	count  atomic.Int64
	notify chan struct{} // cap 1: count grew (for the worker)
	sender chan struct{} // cap 1: count grew (for the sender)
	view   *[]byte       // the aliasing buffers' handle: not ours to pool
}

func (r *releaseCounter) Get(size int) *[]byte { return bufferPool.Get(size) }

func (r *releaseCounter) Put(bp *[]byte) {
	if bp != r.view {
		bufferPool.Put(bp)
	}
	r.count.Add(1)
	select {
	case r.notify <- struct{}{}:
	default:
	}
	select {
	case r.sender <- struct{}{}:
	default:
	}
}

// inFrame is what the Push handler receives into. It embeds the generated
// message for the header fields (so the ordinary proto codec can fill it
// too); our codec leaves Data empty and instead keeps a reference to gRPC's
// transport buffers, with the data field's place in them, so the worker adds
// the values straight out of them (no copy) and then calls release.
type inFrame struct {
	*pb.RingFrame
	pieces  mem.BufferSlice // the whole message, referenced until release
	dataOff int             // byte offset of the data field's payload in pieces
	dataLen int             // its length in bytes
	jobBuf  []byte          // scratch for job_id
}

// release drops the frame's reference to the transport buffers.
func (f *inFrame) release() {
	f.pieces.Free()
	clear(f.pieces)
	f.pieces = f.pieces[:0]
}

// maxJobIDBytes bounds the job_id a frame may carry, maxMacBytes its mac.
const (
	maxJobIDBytes = 1 << 10
	maxMacBytes   = 64
)

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if in, ok := v.(*inFrame); ok {
		in.release()
		if err := in.decode(data); err != nil {
			return err
		}
		in.pieces = append(in.pieces, data...)
		in.pieces.Ref()
		return nil
	}
	f, ok := v.(*pb.RingFrame)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("allreduce codec: cannot unmarshal into %T", v)
		}
		return proto.Unmarshal(data.Materialize(), m)
	}
	return decodeFrame(data.Materialize(), f, false)
}

// decode parses the header fields of the message in data into f and finds
// the data field (the last one, as protobuf has it), walking the buffers
// without joining them.
func (f *inFrame) decode(data mem.BufferSlice) error {
	jobID := f.JobId
	f.JobId, f.Generation, f.SenderRank, f.Seq, f.Step, f.Offset, f.Length = "", 0, 0, 0, 0, 0, 0
	f.Data = f.Data[:0]
	f.dataOff, f.dataLen = 0, 0
	c := newCursor(data)
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return fmt.Errorf("allreduce codec: bad tag: %w", err)
		}
		num, typ := protowire.DecodeTag(tag)
		if num <= 0 {
			return fmt.Errorf("allreduce codec: bad field number %d", num)
		}
		switch typ {
		case protowire.VarintType:
			v, err := c.varint()
			if err != nil {
				return fmt.Errorf("allreduce codec: bad field %d: %w", num, err)
			}
			setVarint(f.RingFrame, num, v)
		case protowire.BytesType:
			n, err := c.varint()
			if err != nil || n > uint64(c.left()) {
				return fmt.Errorf("allreduce codec: bad length of field %d", num)
			}
			switch num {
			case fJobID:
				if n > maxJobIDBytes {
					return fmt.Errorf("allreduce codec: job_id of %d bytes, more than %d", n, maxJobIDBytes)
				}
				if cap(f.jobBuf) < int(n) {
					f.jobBuf = make([]byte, n)
				}
				f.jobBuf = f.jobBuf[:n]
				c.read(f.jobBuf)
				if string(f.jobBuf) == jobID {
					f.JobId = jobID
				} else {
					f.JobId = string(f.jobBuf)
				}
			case fData:
				f.dataOff, f.dataLen = c.pos, int(n)
				c.skip(int(n))
			default:
				c.skip(int(n))
			}
		case protowire.Fixed32Type:
			if c.left() < 4 {
				return fmt.Errorf("allreduce codec: truncated field %d", num)
			}
			c.skip(4)
		case protowire.Fixed64Type:
			if c.left() < 8 {
				return fmt.Errorf("allreduce codec: truncated field %d", num)
			}
			c.skip(8)
		default:
			return fmt.Errorf("allreduce codec: field %d has unsupported wire type %d", num, typ)
		}
	}
	return nil
}

// setVarint stores a varint header field of a RingFrame (others are
// skipped, as protobuf requires of unknown fields).
func setVarint(f *pb.RingFrame, num protowire.Number, v uint64) {
	switch num {
	case fGeneration:
		f.Generation = v
	case fSenderRank:
		f.SenderRank = int32(v)
	case fSeq:
		f.Seq = v
	case fStep:
		f.Step = uint32(v)
	case fOffset:
		f.Offset = v
	case fLength:
		f.Length = v
	}
}

// cursor reads a message spread over several buffers.
type cursor struct {
	s   mem.BufferSlice
	i   int    // current buffer
	b   []byte // its unread part
	pos int    // bytes consumed in all
	len int    // total length
}

func newCursor(s mem.BufferSlice) cursor { return cursor{s: s, len: s.Len()} }

func (c *cursor) left() int { return c.len - c.pos }

func (c *cursor) done() bool { return c.left() == 0 }

// next makes c.b non-empty; c.left() must be positive.
func (c *cursor) next() {
	for len(c.b) == 0 {
		c.b = c.s[c.i].ReadOnlyData()
		c.i++
	}
}

func (c *cursor) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if c.left() == 0 {
			return 0, io.ErrUnexpectedEOF
		}
		c.next()
		x := c.b[0]
		c.b = c.b[1:]
		c.pos++
		v |= uint64(x&0x7f) << shift
		if x < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

// skip and read consume n <= c.left() bytes.
func (c *cursor) skip(n int) {
	c.pos += n
	for n > 0 {
		c.next()
		k := min(n, len(c.b))
		c.b, n = c.b[k:], n-k
	}
}

func (c *cursor) read(dst []byte) {
	c.pos += len(dst)
	for len(dst) > 0 {
		c.next()
		k := copy(dst, c.b)
		c.b, dst = c.b[k:], dst[k:]
	}
}

// applyFrame adds (or, with !add, copies) the float32 values of the data
// field into dst, len(dst) == f.dataLen/4, reading them out of the transport
// buffers in place; a value split across two buffers is joined in carry.
func (f *inFrame) applyFrame(dst []float32, add bool) {
	off, i := f.dataOff, 0
	var carry [4]byte
	nc := 0
	for _, buf := range f.pieces {
		d := buf.ReadOnlyData()
		if off >= len(d) {
			off -= len(d)
			continue
		}
		d, off = d[off:], 0
		if want := 4*(len(dst)-i) - nc; len(d) > want {
			d = d[:want]
		}
		if nc > 0 {
			k := copy(carry[nc:], d)
			nc, d = nc+k, d[k:]
			if nc < 4 {
				continue
			}
			if add {
				addFloats(dst[i:i+1], carry[:])
			} else {
				copyFloats(dst[i:i+1], carry[:])
			}
			i, nc = i+1, 0
		}
		w := len(d) / 4
		if add {
			addFloats(dst[i:i+w], d[:4*w])
		} else {
			copyFloats(dst[i:i+w], d[:4*w])
		}
		i += w
		nc = copy(carry[:], d[4*w:])
		if i == len(dst) {
			return
		}
	}
}

// decodeFrame parses b into f, keeping f.JobId when it is unchanged. With
// alias, f.Data points into b; otherwise it is copied into f.Data's
// capacity. Unknown fields are skipped, as protobuf requires.
func decodeFrame(b []byte, f *pb.RingFrame, alias bool) error {
	jobID := f.JobId
	data := f.Data[:0]
	f.Mac = f.Mac[:0]
	f.JobId, f.Generation, f.SenderRank, f.Seq, f.Step, f.Offset, f.Length = "", 0, 0, 0, 0, 0, 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("allreduce codec: bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fJobID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("allreduce codec: bad job_id: %w", protowire.ParseError(n))
			}
			if string(v) == jobID {
				f.JobId = jobID
			} else {
				f.JobId = string(v)
			}
			b = b[n:]
		case num == fMac && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) > maxMacBytes {
				return fmt.Errorf("allreduce codec: bad mac (%d bytes at most)", maxMacBytes)
			}
			f.Mac = append(f.Mac[:0], v...)
			b = b[n:]
		case num == fData && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("allreduce codec: bad data: %w", protowire.ParseError(n))
			}
			if alias {
				data = v
			} else {
				data = append(data, v...)
			}
			b = b[n:]
		case typ == protowire.VarintType && num >= fGeneration && num <= fLength:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("allreduce codec: bad field %d: %w", num, protowire.ParseError(n))
			}
			setVarint(f, num, v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("allreduce codec: bad field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	f.Data = data
	return nil
}
