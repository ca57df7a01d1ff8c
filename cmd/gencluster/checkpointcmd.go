package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/coordinator"
)

func (a *app) checkpointCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint list|get|verify",
		Short: "List, fetch and verify the checkpoints the coordinators hold",
		Long: `The coordinators hold every running or finished job's newest checkpoints
(JobSpec keep, default 3), each on a majority of them. list shows them, get
fetches one into a file (which eval, sample and export read), verify checks
checkpoint files on disk.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %s (list, get or verify)", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.checkpointListCommand(), a.checkpointGetCommand(), a.checkpointVerifyCommand())
	return cmd
}

// checkpointListJSON is one line of `checkpoint list --json`.
type checkpointListJSON struct {
	JobID      string    `json:"job_id"`
	Step       int64     `json:"step"`
	Time       time.Time `json:"time"`
	Checksum   string    `json:"checksum"`
	SizeBytes  int64     `json:"size_bytes"`
	Holders    []string  `json:"holders"`
	Generation uint64    `json:"generation"`
	WorldSize  int32     `json:"world_size"`
	WriterID   string    `json:"writer_id"`
}

func (a *app) checkpointListCommand() *cobra.Command {
	var addrs, job string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "list --coordinator ADDR[,ADDR...] [--job ID] [--json]",
		Short: "List the checkpoints the coordinators hold (every job's, or one's)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ms []*pb.CheckpointManifest
			err := a.withCoordinators(cmd.Context(), addrs, timeout, func(ctx context.Context, c *coordinator.Client) (err error) {
				ms, err = c.ListCheckpoints(ctx, job)
				return err
			})
			if err != nil {
				return fmt.Errorf("list checkpoints: %w", err)
			}
			rows := make([]checkpointListJSON, 0, len(ms))
			for _, m := range ms {
				rows = append(rows, checkpointListJSON{
					JobID: m.GetJobId(), Step: m.GetStep(), Time: time.UnixMilli(m.GetTimeUnixMs()).UTC(), Checksum: m.GetChecksum(),
					SizeBytes: m.GetSizeBytes(), Holders: append([]string{}, m.GetHolders()...), Generation: m.GetGeneration(),
					WorldSize: m.GetWorldSize(), WriterID: m.GetWriterId(),
				})
			}
			if asJSON {
				return a.printJSON(rows)
			}
			if len(rows) == 0 {
				if job != "" {
					fmt.Fprintf(a.stdout, "the coordinators hold no checkpoint of job %s\n", job)
				} else {
					fmt.Fprintln(a.stdout, "the coordinators hold no checkpoint")
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tSTEP\tTIME\tSIZE\tSHA256\tHOLDERS\tWORLD")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\n", r.JobID, r.Step, r.Time.Format(time.RFC3339), formatBytes(r.SizeBytes),
					short(r.Checksum), holdersText(r.Holders), r.WorldSize)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().StringVar(&job, "job", "", "only this job's checkpoints")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array: job_id, step, time, checksum, size_bytes, holders, generation, world_size, writer_id")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

// short is the first 12 hex digits of a checksum.
func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func (a *app) checkpointGetCommand() *cobra.Command {
	var addrs, job, out string
	var step int64
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "get --coordinator ADDR --job ID [--step S] --out FILE",
		Short: "Fetch a checkpoint from the coordinators into a file (atomically, verified)",
		Long: `Fetch one of a job's checkpoints (--step, default its latest) from the
coordinators into FILE. The file appears only once its bytes and contents have
been verified. If FILE is a directory, the checkpoint is written into it as
ckpt-<step>.db. eval, sample and export read the file.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case job == "":
				return errors.New("--job ID is required")
			case out == "":
				return errors.New("--out FILE is required")
			case step < 0:
				return fmt.Errorf("--step must not be negative, got %d", step)
			}
			c, err := a.newClient(splitAddrs(addrs))
			if err != nil {
				return err
			}
			defer c.Close()
			isDir := false
			if fi, err := os.Stat(out); err == nil && fi.IsDir() {
				isDir = true
			}
			var file string
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			hdr, err := c.GetCheckpoint(ctx, &pb.GetCheckpointRequest{JobId: job, Step: step}, func(h *pb.CheckpointHeader) (string, error) {
				switch {
				case h.GetJobId() != job:
					return "", fmt.Errorf("asked for job %s's checkpoint, received job %q's", job, h.GetJobId())
				case step != 0 && h.GetStep() != step:
					return "", fmt.Errorf("asked for step %d, received step %d", step, h.GetStep())
				}
				file = out
				if isDir {
					file = filepath.Join(out, checkpoint.FileName(h.GetStep()))
				}
				return file, nil
			})
			if err != nil {
				what := "its latest checkpoint"
				if step != 0 {
					what = fmt.Sprintf("its checkpoint at step %d", step)
				}
				return fmt.Errorf("job %s: fetch %s: %w", job, what, err)
			}
			fmt.Fprintf(a.stdout, "job %s step %d sha256 %s %d bytes: %s\n", hdr.GetJobId(), hdr.GetStep(), hdr.GetChecksum(), hdr.GetSizeBytes(), file)
			return nil
		},
	}
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().StringVar(&job, "job", "", "job id (required)")
	cmd.Flags().Int64Var(&step, "step", 0, "step of the checkpoint (0: the job's latest)")
	cmd.Flags().StringVar(&out, "out", "", "file to write (or a directory to write ckpt-<step>.db into) (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this")
	return cmd
}

// verifyJSON is one file of `checkpoint verify --json`.
type verifyJSON struct {
	File     string `json:"file"`
	OK       bool   `json:"ok"`
	Step     int64  `json:"step,omitempty"`
	Model    string `json:"model,omitempty"`
	Checksum string `json:"checksum,omitempty"`
	Error    string `json:"error,omitempty"`
}

func (a *app) checkpointVerifyCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify FILE|DIR [--json]",
		Short: "Check checkpoint files: one file, or every *.db under a directory",
		Long: `Read checkpoint files whole and check them: their format, the SHA-256 over
their contents, and (for files named ckpt-<step>[-<sha256 prefix>].db, as train,
local, workers and coordinators name them) that the name matches the contents.
Given a directory, every *.db file under it is checked (temp files of writes in
progress are skipped). One line per file; the exit status is non-zero if any
file is bad or none was found.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := checkpointFiles(args[0])
			if err != nil {
				return err
			}
			if len(files) == 0 {
				return fmt.Errorf("no checkpoint files (*.db) under %s", args[0])
			}
			results := make([]verifyJSON, 0, len(files))
			bad := 0
			for _, f := range files {
				r := verifyFile(f)
				if !r.OK {
					bad++
				}
				results = append(results, r)
				if !asJSON {
					if r.OK {
						fmt.Fprintf(a.stdout, "ok   %s  step %d  %s  sha256 %s\n", r.File, r.Step, r.Model, r.Checksum)
					} else {
						fmt.Fprintf(a.stdout, "BAD  %s  %s\n", r.File, r.Error)
					}
				}
			}
			if asJSON {
				if err := a.printJSON(results); err != nil {
					return err
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d checkpoint files are bad", bad, len(files))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array: file, ok, step, model, checksum, error")
	return cmd
}

// checkpointFiles is path itself if it is a file, else every *.db file
// under it (recursively), temp files excepted.
func checkpointFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		if d.Type().IsRegular() && strings.HasSuffix(n, ".db") && !strings.Contains(n, ".tmp") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory %s: %w", path, err)
	}
	return files, nil
}

// checkpointName matches the names checkpoint files are given:
// ckpt-<step>.db (train, local) and ckpt-<step>-<sha256 prefix>.db (stores).
var checkpointName = regexp.MustCompile(`^ckpt-(\d+)(?:-([0-9a-f]+))?\.db$`)

// verifyFile reads one checkpoint file whole and checks it.
func verifyFile(path string) verifyJSON {
	r := verifyJSON{File: path}
	meta, sum, err := checkpoint.Verify(path)
	if err != nil {
		r.Error = oneLine(err.Error())
		return r
	}
	r.Step, r.Model, r.Checksum = meta.Step, meta.Job.Model, sum
	if m := checkpointName.FindStringSubmatch(filepath.Base(path)); m != nil {
		step, _ := strconv.ParseInt(m[1], 10, 64)
		switch {
		case step != meta.Step:
			r.Error = fmt.Sprintf("its name says step %d, it holds step %d", step, meta.Step)
			return r
		case m[2] != "" && !strings.HasPrefix(sum, m[2]):
			r.Error = fmt.Sprintf("its name says sha256 %s..., it holds %s", m[2], sum)
			return r
		}
	}
	r.OK = true
	return r
}

// oneLine joins the lines of a multi-line message.
func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }
