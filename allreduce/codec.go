package allreduce

import (
	"encoding/binary"
	"fmt"

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
// the float32 values of its data field, which Marshal writes little-endian
// straight into a pooled buffer (no intermediate []byte).
type outFrame struct {
	jobID      string
	generation uint64
	senderRank int32
	seq        uint64
	step       uint32
	offset     uint64
	length     uint64
	data       []float32
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
	size := protowire.SizeTag(fJobID) + protowire.SizeBytes(len(f.jobID)) +
		protowire.SizeTag(fGeneration) + protowire.SizeVarint(f.generation) +
		protowire.SizeTag(fSenderRank) + protowire.SizeVarint(uint64(f.senderRank)) +
		protowire.SizeTag(fSeq) + protowire.SizeVarint(f.seq) +
		protowire.SizeTag(fStep) + protowire.SizeVarint(uint64(f.step)) +
		protowire.SizeTag(fOffset) + protowire.SizeVarint(f.offset) +
		protowire.SizeTag(fLength) + protowire.SizeVarint(f.length) +
		protowire.SizeTag(fData) + protowire.SizeBytes(dataLen)
	pool := bufferPool
	bp := pool.Get(size)
	b := (*bp)[:0]
	// data first: its offset is then known from the first bytes, so the
	// receiver can land it 4-aligned (see inFrame).
	b = protowire.AppendTag(b, fData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(dataLen))
	n := len(b)
	b = b[:n+dataLen]
	encodeFloats(b[n:], f.data)
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
	*bp = b
	return mem.BufferSlice{mem.NewBuffer(bp, pool)}, nil
}

// inFrame is what the Push handler receives into. It embeds the generated
// message, so the ordinary proto codec can fill it too; our codec copies the
// whole message into raw (reused) and points Data into it: one copy, no
// allocation, no zeroing. Our Marshal writes the data field first, so its
// offset is known from the first bytes and the copy is shifted to make Data
// 4-aligned, which lets the worker add it as []float32.
type inFrame struct {
	*pb.RingFrame
	raw []byte
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if in, ok := v.(*inFrame); ok {
		n := data.Len()
		pad := alignPad(data)
		if cap(in.raw) < n+pad {
			in.raw = make([]byte, n+pad)
		}
		in.raw = in.raw[:n+pad]
		data.CopyTo(in.raw[pad:])
		return decodeFrame(in.raw[pad:], in.RingFrame, true)
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

// alignPad returns how far to shift a message so that a leading data field's
// payload starts 4-aligned (0 if the message does not start with it).
func alignPad(data mem.BufferSlice) int {
	var head [1 + binary.MaxVarintLen64]byte
	n := 0
	for _, b := range data {
		n += copy(head[n:], b.ReadOnlyData())
		if n == len(head) {
			break
		}
	}
	num, typ, tn := protowire.ConsumeTag(head[:n])
	if tn < 0 || num != fData || typ != protowire.BytesType {
		return 0
	}
	_, vn := protowire.ConsumeVarint(head[tn:n])
	if vn < 0 {
		return 0
	}
	return (4 - (tn+vn)%4) % 4
}

// decodeFrame parses b into f, keeping f.JobId when it is unchanged. With
// alias, f.Data points into b; otherwise it is copied into f.Data's
// capacity. Unknown fields are skipped, as protobuf requires.
func decodeFrame(b []byte, f *pb.RingFrame, alias bool) error {
	jobID := f.JobId
	data := f.Data[:0]
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
