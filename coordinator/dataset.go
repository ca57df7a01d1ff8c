package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/dataset"
)

// datasetChunk is the pixel bytes per streamed message; maxDatasetBytes
// bounds what a worker accepts.
const (
	datasetChunk    = 1 << 20
	maxDatasetBytes = 1 << 32
)

// Bounds of what data-set streams may cost a coordinator: each stream
// reads the whole data set into memory, so at most DatasetStreams run at
// once (more are refused with ResourceExhausted, and the worker tries
// another coordinator or later), each paced to DatasetRate bytes/s.
const (
	DefaultDatasetStreams = 4
	DefaultDatasetRate    = 256 << 20
)

// FetchDataset streams the training images of a data set as this
// coordinator reads it, for a worker that lacks it. Any coordinator
// answers (it is a read of the coordinator's own files, not of the state).
func (s *Service) FetchDataset(req *pb.FetchDatasetRequest, stream pb.Coordinator_FetchDatasetServer) error {
	if len(req.GetDataset()) > 4096 {
		return status.Errorf(codes.InvalidArgument, "dataset name of %d bytes is too long", len(req.GetDataset()))
	}
	select {
	case s.datasetSlots <- struct{}{}:
		defer func() { <-s.datasetSlots }()
	default:
		return status.Errorf(codes.ResourceExhausted, "coordinator %s streams %d data sets already, the most it serves at once; retry later or elsewhere",
			s.node.ID(), cap(s.datasetSlots))
	}
	images, err := dataset.Open(req.GetDataset(), dataset.Train)
	if err != nil {
		return status.Errorf(codes.NotFound, "coordinator has no data set %q: %v", req.GetDataset(), err)
	}
	s.log.Info("streaming data set to a worker", "dataset", req.GetDataset(), "images", images.N)
	first := &pb.DatasetChunk{Images: int64(images.N), Rows: int32(images.Rows), Cols: int32(images.Cols)}
	start := time.Now()
	for off := 0; off < len(images.Pix) || first != nil; off += datasetChunk {
		c := first
		if c == nil {
			c = &pb.DatasetChunk{}
		}
		first = nil
		c.Pixels = images.Pix[off:min(off+datasetChunk, len(images.Pix))]
		if err := stream.Send(c); err != nil {
			return err
		}
		if err := pace(stream.Context(), start, int64(off+len(c.Pixels)), s.datasetRate); err != nil {
			return status.FromContextError(err).Err()
		}
	}
	return nil
}

// pace waits until sent bytes since start are within rate bytes/s.
func pace(ctx context.Context, start time.Time, sent, rate int64) error {
	ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start)
	if ahead <= 0 {
		return nil
	}
	t := time.NewTimer(ahead)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FetchDataset receives the training images of a data set from the
// coordinators (the first one that has it), for a worker that lacks it.
func (c *Client) FetchDataset(ctx context.Context, spec string) (*dataset.Images, error) {
	var last error
	for tries := max(1, 2*len(c.Addrs())); tries > 0; tries-- {
		cl, addr, err := c.pick()
		if err != nil {
			return nil, err
		}
		images, err := fetchFrom(ctx, cl, spec)
		if err == nil {
			return images, nil
		}
		last = fmt.Errorf("coordinator %s: %w", addr, err)
		if ctx.Err() != nil {
			break
		}
		c.next(addr)
		if status.Code(err) == codes.ResourceExhausted {
			// Busy serving others: not a failure; wait a little (until ctx
			// ends) and try again.
			tries++
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil, fmt.Errorf("fetch data set %q: %w", spec, last)
}

func fetchFrom(ctx context.Context, cl pb.CoordinatorClient, spec string) (*dataset.Images, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	stream, err := cl.FetchDataset(ctx, &pb.FetchDatasetRequest{Dataset: spec})
	if err != nil {
		return nil, err
	}
	head, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	n, rows, cols := head.GetImages(), int64(head.GetRows()), int64(head.GetCols())
	if n < 1 || rows < 1 || cols < 1 || rows > 1<<12 || cols > 1<<12 || n > maxDatasetBytes/(rows*cols) {
		return nil, fmt.Errorf("data set header of %d images of %dx%d is not plausible", n, rows, cols)
	}
	pix := make([]byte, 0, n*rows*cols)
	for c := head; ; {
		if int64(len(pix)+len(c.GetPixels())) > n*rows*cols {
			return nil, errors.New("data set stream carries more pixels than its header says")
		}
		pix = append(pix, c.GetPixels()...)
		if c, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return dataset.FromPixels(int(n), int(rows), int(cols), pix, "coordinators:"+spec)
}
