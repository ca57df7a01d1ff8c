package coordinator

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/models"
)

// CommandVersion is the version of the command set this binary writes and
// the newest it applies. Bump it when a command gains a meaning an older
// binary would get wrong; never reuse field numbers.
//
// Version 2: worker secrets (RegisterWorker.secret_sha256, issued; a
// registered id at a new address with its secret takes its place), the
// RenewRing, SetWorkerUnfit and CancelJob commands, RemoveWorkers.job_warning.
//
// Version 3: job ids carry the proposer's nonce (SubmitJob.nonce),
// JobSpec.keep, RecordCheckpoint with holders (a recorded step with the
// same checksum adds holders).
//
// Version 4: RecordSample (the dashboard's sample grid), JobSpec.samples,
// the loss history ReportProgress builds.
const CommandVersion = 4

// Limits of what a command may carry.
const (
	MaxIDLen   = 128   // worker ids, job ids, checksums
	MaxTextLen = 1024  // reasons and messages
	MaxBatch   = 65536 // global batch
	MaxWorkers = 1024  // bound of min_workers, of one RemoveWorkers and of the workers registered at once
	// MaxIdentities bounds the worker identities the state remembers; past
	// it, the least recently registered ids that are not registered now are
	// forgotten.
	MaxIdentities = 4096
	// MaxQueuedJobs bounds the jobs waiting to run: a submit beyond it is
	// refused (ResourceExhausted).
	MaxQueuedJobs = 1000
	// MaxJobWarnings bounds a job's warnings (the newest are kept).
	MaxJobWarnings = 20
	// MaxSampleBytes bounds a job's sample grid PNG; MaxSamples the images
	// in it.
	MaxSampleBytes = 64 << 10
	MaxSamples     = 64
	// MaxBucketKiB bounds JobSpec.bucket_kib (1 GiB).
	MaxBucketKiB = 1 << 20
	// MaxLossHistory bounds the points of a job's loss history.
	MaxLossHistory = 512
	maxAddrLen     = 256
	maxKeyLen      = 512 // CheckpointManifest.key
)

// Errors of the state machine and its commands. Every error Apply returns
// wraps exactly one of them, so callers map them with errors.Is (to gRPC
// codes, say) and never compare strings.
var (
	// ErrInvalid: the command is malformed; the message names the field.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: an unknown job or worker.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a worker id is held by a registered worker at
	// another address.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNotOwner: a worker id is registered with a secret the caller does
	// not hold (another data dir's worker).
	ErrNotOwner = errors.New("not the owner")
	// ErrNotInRing: a worker sent what only a member of the current ring
	// may send (progress, the end of a job, a checkpoint, the sample grid).
	ErrNotInRing = errors.New("not in the ring")
	// ErrStaleGeneration: the command was made for a ring generation that
	// is no longer current.
	ErrStaleGeneration = errors.New("stale ring generation")
	// ErrNotRunning: the job exists but is not running (queued or finished),
	// or runs but waits for workers.
	ErrNotRunning = errors.New("job not running")
	// ErrUnsupportedVersion: a command or snapshot is newer than this
	// binary knows (a mixed-version cluster); upgrade this coordinator.
	ErrUnsupportedVersion = errors.New("unsupported version")
	// ErrCorrupt: bytes that do not decode (a damaged log entry or
	// snapshot).
	ErrCorrupt = errors.New("corrupt data")
)

// EncodeCommand validates c and encodes it for raft.Apply. Encoding is
// deterministic, so equal commands give equal bytes.
func EncodeCommand(c *pb.Command) ([]byte, error) {
	if err := ValidateCommand(c); err != nil {
		return nil, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand decodes a log entry's bytes. It does not validate: Apply
// does, so that a future version is told apart from garbage.
func DecodeCommand(b []byte) (*pb.Command, error) {
	c := &pb.Command{}
	if err := proto.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("decode command (%d bytes): %w: %w", len(b), err, ErrCorrupt)
	}
	return c, nil
}

// ValidateCommand checks a command without looking at the state: the
// proposer runs it before proposing, Apply again before applying.
func ValidateCommand(c *pb.Command) error {
	if c == nil {
		return fmt.Errorf("command: missing: %w", ErrInvalid)
	}
	switch {
	case c.GetVersion() == 0:
		return fmt.Errorf("command: version missing: %w", ErrInvalid)
	case c.GetVersion() > CommandVersion:
		return fmt.Errorf("command version %d is newer than this binary's %d (upgrade this coordinator): %w",
			c.GetVersion(), CommandVersion, ErrUnsupportedVersion)
	case c.GetTimeUnixMs() <= 0:
		return fmt.Errorf("command: time_unix_ms %d not stamped: %w", c.GetTimeUnixMs(), ErrInvalid)
	}
	switch b := c.GetBody().(type) {
	case *pb.Command_RegisterWorker:
		return validateRegisterWorker(b.RegisterWorker)
	case *pb.Command_RemoveWorkers:
		return validateRemoveWorkers(b.RemoveWorkers)
	case *pb.Command_SubmitJob:
		if b.SubmitJob == nil {
			return fmt.Errorf("submit_job: missing: %w", ErrInvalid)
		}
		if n := b.SubmitJob.GetNonce(); n != "" && !isNonce(n) {
			return fmt.Errorf("submit_job: nonce %.20q is not %d lowercase hex digits: %w", n, NonceLen, ErrInvalid)
		}
		if err := validateText("request_id", b.SubmitJob.GetRequestId(), false); err != nil {
			return err
		}
		return ValidateJobSpec(b.SubmitJob.GetSpec())
	case *pb.Command_ReportProgress:
		return validateReportProgress(b.ReportProgress)
	case *pb.Command_FinishJob:
		return validateFinishJob(b.FinishJob)
	case *pb.Command_RecordCheckpoint:
		if b.RecordCheckpoint == nil {
			return fmt.Errorf("record_checkpoint: missing: %w", ErrInvalid)
		}
		return validateManifest(b.RecordCheckpoint.GetManifest())
	case *pb.Command_RenewRing:
		r := b.RenewRing
		if r == nil || r.GetGeneration() == 0 {
			return fmt.Errorf("renew_ring: generation missing: %w", ErrInvalid)
		}
		return validateText("renew_ring: reason", r.GetReason(), true)
	case *pb.Command_SetWorkerUnfit:
		r := b.SetWorkerUnfit
		if r == nil {
			return fmt.Errorf("set_worker_unfit: missing: %w", ErrInvalid)
		}
		return errors.Join(validateID("set_worker_unfit: worker_id", r.GetWorkerId()),
			validateID("set_worker_unfit: job_id", r.GetJobId()),
			validateText("set_worker_unfit: reason", r.GetReason(), true))
	case *pb.Command_CancelJob:
		r := b.CancelJob
		if r == nil {
			return fmt.Errorf("cancel_job: missing: %w", ErrInvalid)
		}
		return errors.Join(validateID("cancel_job: job_id", r.GetJobId()),
			validateText("cancel_job: reason", r.GetReason(), false))
	case *pb.Command_RecordSample:
		return validateRecordSample(b.RecordSample)
	case nil:
		return fmt.Errorf("command: no body (unknown to version %d?): %w", CommandVersion, ErrInvalid)
	default:
		return fmt.Errorf("command: unknown body %T: %w", b, ErrInvalid)
	}
}

// ValidateJobSpec checks a job's settings; the error names the field.
func ValidateJobSpec(s *pb.JobSpec) error {
	if s == nil {
		return fmt.Errorf("job spec: missing: %w", ErrInvalid)
	}
	if _, err := (models.Spec{Name: s.GetModel(), Levels: int(s.GetLevels())}).Resolve(); err != nil {
		return fmt.Errorf("job spec: %w: %w", err, ErrInvalid)
	}
	if d := s.GetDataset(); d != "mnist" {
		dir, ok := strings.CutPrefix(d, "idx:")
		if !ok || dir == "" {
			return fmt.Errorf("job spec: dataset %q is not mnist or idx:DIR: %w", d, ErrInvalid)
		}
		if len(d) > 4096 || !utf8.ValidString(d) || strings.ContainsRune(d, 0) {
			return fmt.Errorf("job spec: dataset %.40q... is not a usable path: %w", d, ErrInvalid)
		}
	}
	if b := s.GetBatch(); b < 1 || b > MaxBatch {
		return fmt.Errorf("job spec: batch %d is outside 1..%d: %w", b, MaxBatch, ErrInvalid)
	}
	if n := s.GetSteps(); n < 1 {
		return fmt.Errorf("job spec: steps %d is less than 1: %w", n, ErrInvalid)
	}
	if lr := s.GetLr(); !(lr > 0) || math.IsInf(lr, 0) {
		return fmt.Errorf("job spec: lr %v is not a positive finite number: %w", lr, ErrInvalid)
	}
	if c := s.GetCheckpointEvery(); c < 0 {
		return fmt.Errorf("job spec: checkpoint_every %d is negative: %w", c, ErrInvalid)
	}
	if m := s.GetMinWorkers(); m < 1 || m > MaxWorkers {
		return fmt.Errorf("job spec: min_workers %d is outside 1..%d: %w", m, MaxWorkers, ErrInvalid)
	}
	if k := s.GetKeep(); k < 0 || k > MaxKeep {
		return fmt.Errorf("job spec: keep %d is outside 0..%d: %w", k, MaxKeep, ErrInvalid)
	}
	if n := s.GetSamples(); n < 0 || n > MaxSamples {
		return fmt.Errorf("job spec: samples %d is outside 0..%d: %w", n, MaxSamples, ErrInvalid)
	}
	if n := s.GetBucketKib(); n < 0 || n > MaxBucketKiB {
		return fmt.Errorf("job spec: bucket_kib %d is outside 0..%d: %w", n, MaxBucketKiB, ErrInvalid)
	}
	return nil
}

// pngSignature starts every PNG file.
const pngSignature = "\x89PNG\r\n\x1a\n"

func validateRecordSample(r *pb.RecordSample) error {
	if r == nil {
		return fmt.Errorf("record_sample: missing: %w", ErrInvalid)
	}
	if err := errors.Join(validateID("record_sample: job_id", r.GetJobId()), validateID("record_sample: worker_id", r.GetWorkerId())); err != nil {
		return err
	}
	switch n := len(r.GetPng()); {
	case r.GetGeneration() == 0:
		return fmt.Errorf("record_sample: generation missing: %w", ErrInvalid)
	case r.GetStep() < 1:
		return fmt.Errorf("record_sample: step %d is not positive: %w", r.GetStep(), ErrInvalid)
	case n > MaxSampleBytes:
		return fmt.Errorf("record_sample: png of %d bytes is over %d: %w", n, MaxSampleBytes, ErrInvalid)
	case !strings.HasPrefix(string(r.GetPng()), pngSignature):
		return fmt.Errorf("record_sample: png is not a PNG file: %w", ErrInvalid)
	}
	return nil
}

func validateRegisterWorker(r *pb.RegisterWorker) error {
	if r == nil {
		return fmt.Errorf("register_worker: missing: %w", ErrInvalid)
	}
	if err := validateID("register_worker: worker_id", r.GetWorkerId()); err != nil {
		return err
	}
	if n := len(r.GetSecretSha256()); n != 0 && n != 32 {
		return fmt.Errorf("register_worker: secret_sha256 has %d bytes, want 32: %w", n, ErrInvalid)
	}
	if r.GetIssued() && len(r.GetSecretSha256()) == 0 {
		return fmt.Errorf("register_worker: issued without secret_sha256: %w", ErrInvalid)
	}
	return validateAddr("register_worker: addr", r.GetAddr())
}

func validateRemoveWorkers(r *pb.RemoveWorkers) error {
	if r == nil {
		return fmt.Errorf("remove_workers: missing: %w", ErrInvalid)
	}
	ids := r.GetWorkerIds()
	if len(ids) == 0 || len(ids) > MaxWorkers {
		return fmt.Errorf("remove_workers: worker_ids has %d entries, want 1..%d: %w", len(ids), MaxWorkers, ErrInvalid)
	}
	for _, id := range ids {
		if err := validateID("remove_workers: worker_ids", id); err != nil {
			return err
		}
	}
	return errors.Join(validateText("remove_workers: reason", r.GetReason(), true),
		validateText("remove_workers: job_warning", r.GetJobWarning(), false))
}

func validateReportProgress(r *pb.ReportProgress) error {
	if r == nil {
		return fmt.Errorf("report_progress: missing: %w", ErrInvalid)
	}
	if err := validateID("report_progress: job_id", r.GetJobId()); err != nil {
		return err
	}
	switch {
	case r.GetGeneration() == 0:
		return fmt.Errorf("report_progress: generation missing: %w", ErrInvalid)
	case r.GetStep() < 0:
		return fmt.Errorf("report_progress: step %d is negative: %w", r.GetStep(), ErrInvalid)
	case math.IsNaN(r.GetLoss()) || math.IsInf(r.GetLoss(), 0):
		return fmt.Errorf("report_progress: loss %v is not finite (report a diverged job with FinishJob): %w", r.GetLoss(), ErrInvalid)
	case !(r.GetImagesPerSec() >= 0) || math.IsInf(r.GetImagesPerSec(), 0):
		return fmt.Errorf("report_progress: images_per_sec %v is not a finite number >= 0: %w", r.GetImagesPerSec(), ErrInvalid)
	}
	return nil
}

func validateFinishJob(r *pb.FinishJob) error {
	if r == nil {
		return fmt.Errorf("finish_job: missing: %w", ErrInvalid)
	}
	if err := validateID("finish_job: job_id", r.GetJobId()); err != nil {
		return err
	}
	if s := r.GetState(); s != pb.JobState_JOB_STATE_DONE && s != pb.JobState_JOB_STATE_FAILED {
		return fmt.Errorf("finish_job: state %v is not done or failed: %w", s, ErrInvalid)
	}
	return validateText("finish_job: message", r.GetMessage(), false)
}

func validateManifest(m *pb.CheckpointManifest) error {
	if m == nil {
		return fmt.Errorf("record_checkpoint: manifest missing: %w", ErrInvalid)
	}
	if err := validateID("record_checkpoint: job_id", m.GetJobId()); err != nil {
		return err
	}
	if err := validateID("record_checkpoint: checksum", m.GetChecksum()); err != nil {
		return err
	}
	switch {
	case m.GetStep() < 0:
		return fmt.Errorf("record_checkpoint: step %d is negative: %w", m.GetStep(), ErrInvalid)
	case m.GetTimeUnixMs() < 0:
		return fmt.Errorf("record_checkpoint: time_unix_ms %d is negative: %w", m.GetTimeUnixMs(), ErrInvalid)
	case m.GetSizeBytes() < 0:
		return fmt.Errorf("record_checkpoint: size_bytes %d is negative: %w", m.GetSizeBytes(), ErrInvalid)
	case m.GetWorldSize() < 0 || m.GetWorldSize() > MaxWorkers:
		return fmt.Errorf("record_checkpoint: world_size %d is outside 0..%d: %w", m.GetWorldSize(), MaxWorkers, ErrInvalid)
	}
	if w := m.GetWriterId(); w != "" {
		if err := validateID("record_checkpoint: writer_id", w); err != nil {
			return err
		}
	}
	if len(m.GetKey()) > maxKeyLen || strings.ContainsRune(m.GetKey(), 0) {
		return fmt.Errorf("record_checkpoint: key is longer than %d bytes or holds NUL: %w", maxKeyLen, ErrInvalid)
	}
	if n := len(m.GetHolders()); n > MaxHolders {
		return fmt.Errorf("record_checkpoint: %d holders, more than %d: %w", n, MaxHolders, ErrInvalid)
	}
	for _, h := range m.GetHolders() {
		if err := validateID("record_checkpoint: holders", h); err != nil {
			return err
		}
	}
	return nil
}

// NonceLen is the length of SubmitJob.nonce: hex digits of random bits.
const NonceLen = 8

func isNonce(s string) bool {
	if len(s) != NonceLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validateID accepts 1..MaxIDLen bytes of printable, non-space UTF-8.
func validateID(field, id string) error {
	if id == "" {
		return fmt.Errorf("%s: empty: %w", field, ErrInvalid)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s: %.40q... is longer than %d bytes: %w", field, id, MaxIDLen, ErrInvalid)
	}
	for _, r := range id {
		if r == utf8.RuneError || !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%s: %q holds a space or an unprintable character: %w", field, id, ErrInvalid)
		}
	}
	return nil
}

// validateText accepts printable UTF-8 up to MaxTextLen bytes.
func validateText(field, s string, required bool) error {
	if s == "" && required {
		return fmt.Errorf("%s: empty: %w", field, ErrInvalid)
	}
	if len(s) > MaxTextLen {
		return fmt.Errorf("%s: %d bytes, longer than %d: %w", field, len(s), MaxTextLen, ErrInvalid)
	}
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("%s: %.40q holds an unprintable character: %w", field, s, ErrInvalid)
		}
	}
	return nil
}

// validateAddr accepts host:port with a non-empty host and a port 1..65535.
func validateAddr(field, addr string) error {
	if len(addr) > maxAddrLen {
		return fmt.Errorf("%s: %.40q... is longer than %d bytes: %w", field, addr, maxAddrLen, ErrInvalid)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w: %w", field, addr, err, ErrInvalid)
	}
	if host == "" {
		return fmt.Errorf("%s: %q has no host: %w", field, addr, ErrInvalid)
	}
	if err := validateID(field+" host", host); err != nil {
		return err
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%s: %q has no usable port (1..65535): %w", field, addr, ErrInvalid)
	}
	return nil
}
