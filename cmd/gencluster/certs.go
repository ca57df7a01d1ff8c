package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/trust"
)

func (a *app) certsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs init|issue|token",
		Short: "Make a private CA and the certificates of the cluster's roles (for --tls-dir)",
		Long: `Make the credentials for mutual TLS. Every process takes --tls-dir FOLDER,
one role's folder holding ca.crt, tls.crt and tls.key (the layout of a
Kubernetes TLS secret): coordinators the coordinator folder, workers the
worker folder, and submit, status, cancel, checkpoint and coordinator
remove the client folder. Each role may call only what it needs
(docs/SECURITY.md).

For small clusters, workers and clients may instead take --token-file
DIR/token, a shared secret that also pins the CA, so that they need no
certificate of their own; coordinators still need theirs, and admit token
holders when given --token-file too.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("certs: give init, issue or token")
			}
			return fmt.Errorf("certs: give init, issue or token, not %q", args)
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return nil },
	}
	cmd.AddCommand(a.certsInitCommand(), a.certsIssueCommand(), a.certsTokenCommand())
	return cmd
}

func (a *app) certsInitCommand() *cobra.Command {
	var dir, hosts string
	var validity time.Duration
	var keep bool
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--coordinator-hosts H[,H...]]",
		Short: "Write a new CA and a certificate for each role",
		Long: `Write a new private CA (DIR/ca.crt, DIR/ca.key) and one folder per role,
DIR/coordinator, DIR/worker and DIR/client, each with ca.crt, tls.crt and
tls.key (keys 0600), and a join token, DIR/token (0600).
--coordinator-hosts (names or IPs) go into the coordinator certificate, so
that standard tools can verify it by name. Keep DIR/ca.key off the cluster:
it issues certificates (gencluster certs issue).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			err := trust.Init(dir, splitAddrs(hosts), trust.IssueOptions{Validity: validity})
			if keep && errors.Is(err, fs.ErrExist) {
				fmt.Fprintf(a.stdout, "%s already holds a CA: kept it as it is\n", dir)
				return nil
			}
			if err != nil {
				return err
			}
			for _, r := range trust.Roles() {
				fmt.Fprintf(a.stdout, "%s: --tls-dir %s\n", r, filepath.Join(dir, string(r)))
			}
			fmt.Fprintf(a.stdout, "token (workers and clients without a certificate; coordinators to admit them): --token-file %s\n", filepath.Join(dir, trust.TokenFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the CA and the role folders into (required)")
	cmd.Flags().StringVar(&hosts, "coordinator-hosts", "", "the coordinators' host names or IPs, comma-separated")
	cmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the role certificates are valid")
	cmd.Flags().BoolVar(&keep, "keep-existing", false, "if DIR already holds a CA, leave everything as it is and exit 0 (for an init container that runs at every start)")
	return cmd
}

func (a *app) certsIssueCommand() *cobra.Command {
	var dir, role, hosts, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --role coordinator|worker|client --out FOLDER [--host H[,H...]]",
		Short: "Issue one more certificate from the CA in DIR",
		Long: `Issue a certificate for a role, signed by DIR/ca.key, into FOLDER (ca.crt,
tls.crt, tls.key). Issuing into a folder a process uses rotates its
certificate: processes re-read their folder when it changes.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || out == "" {
				return errors.New("--dir and --out are required")
			}
			r, err := trust.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			if err := trust.Issue(dir, r, splitAddrs(hosts), out, trust.IssueOptions{Validity: validity}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: --tls-dir %s\n", r, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the directory of gencluster certs init (its ca.crt and ca.key) (required)")
	cmd.Flags().StringVar(&role, "role", "", "coordinator, worker or client (required)")
	cmd.Flags().StringVar(&hosts, "host", "", "host names or IPs for the certificate, comma-separated")
	cmd.Flags().StringVar(&out, "out", "", "folder to write ca.crt, tls.crt and tls.key into (required)")
	cmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificate is valid")
	return cmd
}

func (a *app) certsTokenCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "token --dir DIR",
		Short: "Write a new join token to DIR/token",
		Long: `Write a new join token to DIR/token (0600), replacing the one there: a fresh
random secret, pinned to every CA certificate in DIR/ca.crt. Run it to
rotate the token, or after adding a new CA to DIR/ca.crt (CA rotation), so
that the token verifies coordinators signed by either CA.

To rotate without a pause, append the new token as a second line to the
coordinators' --token-file (they accept every line and re-read the file
when it changes), give workers and clients the new token, then remove the
old line.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			path, err := trust.NewToken(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "token: --token-file %s\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the directory of gencluster certs init (its ca.crt) (required)")
	return cmd
}
