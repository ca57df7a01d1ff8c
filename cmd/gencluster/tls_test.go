package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/trust"
)

// With --tls-dir a cluster of processes trains over mutual TLS, and each
// call made without the right credentials fails with a precise status and
// changes nothing: no certificate, another CA's certificate, a worker
// certificate submitting, speaking raft or adding a coordinator, a client
// certificate adding a coordinator.
func TestTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if out, errs, code := gencluster(t, "certs", "init", "--dir", certs, "--coordinator-hosts", "localhost"); code != 0 || !strings.Contains(out, "worker: --tls-dir") {
		t.Fatalf("certs init: exit %d, %s%s", code, out, errs)
	}
	role := func(r trust.Role) string { return filepath.Join(certs, string(r)) }
	a1 := freeAddr(t)
	coord := startProc(t, "coordinator c1", "--tls-dir", role(trust.Coordinator), "coordinator", "--id", "c1", "--listen", a1, "--peers", "c1="+a1,
		"--data-dir", filepath.Join(dir, "c1"))
	for _, w := range []string{"w1", "w2"} {
		startProc(t, "worker "+w, "--tls-dir", role(trust.Worker), "worker", "--join", a1, "--listen", "127.0.0.1:0",
			"--data-dir", filepath.Join(dir, w), "--threads", "1")
	}
	out, errs, code := gencluster(t, "--tls-dir", role(trust.Client), "submit", "--coordinator", a1, "--model", "vae", "--batch", "16",
		"--steps", "30", "--min-workers", "2", "--checkpoint-every", "0", "--timeout", "30s")
	if code != 0 {
		t.Fatalf("submit over TLS: %s", errs)
	}
	job := strings.TrimSpace(out)

	creds := func(r trust.Role) *trust.Credentials {
		c, err := trust.Load(role(r), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client, err := coordinator.NewClient([]string{a1}, creds(trust.Client).DialOption(trust.Coordinator))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	pollStatus(t, client, 90*time.Second, "the job done over TLS", func(st *pb.StatusResponse) (bool, string) {
		for _, j := range st.GetJobs() {
			if j.GetId() == job {
				return j.GetState() == coordinator.JobDone && len(st.GetWorkers()) == 2, j.GetState()
			}
		}
		return false, "no job"
	})

	// No certificate: the TLS server does not speak to it.
	_, errs, code = gencluster(t, "status", "--coordinator", a1, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "may require TLS: give --tls-dir") {
		t.Errorf("status without a certificate: exit %d, %s", code, errs)
	}
	// Another CA's client certificate.
	other := filepath.Join(dir, "other")
	if _, errs, code := gencluster(t, "certs", "init", "--dir", other); code != 0 {
		t.Fatalf("certs init (other CA): %s", errs)
	}
	_, errs, code = gencluster(t, "--tls-dir", filepath.Join(other, "client"), "status", "--coordinator", a1, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "certificate") {
		t.Errorf("status with another CA's certificate: exit %d, %s", code, errs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	asWorker, err := grpc.NewClient(a1, creds(trust.Worker).DialOption(trust.Coordinator))
	if err != nil {
		t.Fatal(err)
	}
	defer asWorker.Close()
	asClient, err := grpc.NewClient(a1, creds(trust.Client).DialOption(trust.Coordinator))
	if err != nil {
		t.Fatal(err)
	}
	defer asClient.Close()
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", what, err)
		}
	}
	_, err = pb.NewCoordinatorClient(asWorker).Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 8, Steps: 1, Lr: 0.001}})
	refused("a worker certificate submitting", err)
	_, err = pb.NewCoordinatorClient(asWorker).AddCoordinator(ctx, &pb.AddCoordinatorRequest{Id: "evil", Addr: "127.0.0.1:1"})
	refused("a worker certificate adding a coordinator", err)
	_, err = pb.NewCoordinatorClient(asClient).AddCoordinator(ctx, &pb.AddCoordinatorRequest{Id: "evil", Addr: "127.0.0.1:1"})
	refused("a client certificate adding a coordinator", err)
	_, err = pb.NewRaftTransportClient(asWorker).AppendEntries(ctx, &pb.RaftAppendEntriesRequest{})
	refused("a worker certificate speaking raft", err)
	_, err = pb.NewCoordinatorClient(asClient).Join(ctx, &pb.JoinRequest{WorkerId: "w-evil", Addr: "127.0.0.1:1"})
	refused("a client certificate joining as a worker", err)
	// A worker certificate without a worker's issued secret may not end a
	// job, under any id.
	for _, id := range []string{"w-evil", ""} {
		_, err = pb.NewCoordinatorClient(asWorker).FinishJob(ctx, &pb.FinishJobRequest{WorkerId: id, JobId: job, Failed: true, Message: "evil"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("a worker certificate finishing the job as %q: %v, want Unauthenticated", id, err)
		}
	}

	// Rotation: a new coordinator certificate issued into the folder the
	// running coordinator reads is taken up without a restart, and clients
	// go on connecting.
	if _, errs, code := gencluster(t, "certs", "issue", "--dir", certs, "--role", "coordinator", "--host", "localhost",
		"--out", role(trust.Coordinator)); code != 0 {
		t.Fatalf("certs issue (rotation): %s", errs)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(coord.log.String(), `msg="trust: reloaded credentials"`) {
		// Reloads happen on handshakes: make new connections.
		gencluster(t, "--tls-dir", role(trust.Client), "status", "--coordinator", a1, "--timeout", "2s")
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator did not reload its rotated certificate:\n%s", tail(coord.log.String(), 2000))
		}
		time.Sleep(300 * time.Millisecond)
	}
	if _, errs, code := gencluster(t, "--tls-dir", role(trust.Client), "status", "--coordinator", a1, "--timeout", "5s"); code != 0 {
		t.Errorf("status after the rotation: %s", errs)
	}

	// Nothing changed: one coordinator, two workers, one job.
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetCoordinators()) != 1 || len(st.GetWorkers()) != 2 || len(st.GetJobs()) != 1 || st.GetJobs()[0].GetState() != coordinator.JobDone {
		t.Errorf("after the refused calls: %d coordinators, %d workers, %d jobs; want 1, 2, 1 (done)", len(st.GetCoordinators()), len(st.GetWorkers()), len(st.GetJobs()))
	}
}

// The fault tests run with TLS on: the leader killed mid-job in a cluster
// whose every process holds a certificate.
func TestClusterKillLeaderTLS(t *testing.T) {
	runSecureClusterScenario(t, certSecurity(t), 3, 2, killLeader)
}

// A worker killed mid-job in a cluster whose workers and clients hold only
// the join token; then each call without the right token fails with a
// precise status and changes nothing.
func TestClusterKillWorkerToken(t *testing.T) {
	sec := tokenSecurity(t)
	c := runSecureClusterScenario(t, sec, 1, 3, func(c *testCluster) []*proc {
		c.workers[1].kill()
		return []*proc{c.workers[1]}
	})
	coord := c.coords[0]
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A wrong token, pinned to the right CA: the coordinator is trusted,
	// the token refused, and the refusal logged with the caller's address.
	good, err := os.ReadFile(filepath.Join(sec.certs, trust.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(strings.TrimSpace(string(good)), ":", 3)
	wrong := filepath.Join(t.TempDir(), "wrong-token")
	if err := os.WriteFile(wrong, []byte(parts[0]+":"+parts[1]+":"+strings.Repeat("f", 64)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs, code := gencluster(t, "--token-file", wrong, "status", "--coordinator", coord, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "Unauthenticated") || !strings.Contains(errs, "not this cluster's") {
		t.Errorf("status with a wrong token: exit %d, %s", code, errs)
	}
	if log := c.cprocs[0].log.String(); !strings.Contains(log, "call refused") || !strings.Contains(log, "peer=127.0.0.1:") {
		t.Errorf("the coordinator did not log the refused token with the caller's address:\n%s", tail(log, 2000))
	}
	// A token of another cluster: its pin does not match this CA, so the
	// coordinator is not trusted (and never sees the secret).
	other := certsInit(t)
	_, errs, code = gencluster(t, "--token-file", filepath.Join(other, trust.TokenFile), "status", "--coordinator", coord, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "not signed by a CA the token names") {
		t.Errorf("status with another cluster's token: exit %d, %s", code, errs)
	}
	// No token at all.
	_, errs, code = gencluster(t, "status", "--coordinator", coord, "--timeout", "2s")
	if code == 0 || !strings.Contains(errs, "--token-file") {
		t.Errorf("status without a token: exit %d, %s", code, errs)
	}
	// A coordinator that does not admit the token (certificates only)
	// says so to a token holder.
	strict := freeAddr(t)
	startProc(t, "coordinator strict", "--tls-dir", filepath.Join(sec.certs, string(trust.Coordinator)), "coordinator", "--id", "s1",
		"--listen", strict, "--peers", "s1="+strict, "--data-dir", filepath.Join(t.TempDir(), "s1"))
	_, errs, code = gencluster(t, append(slices.Clone(sec.client), "status", "--coordinator", strict, "--timeout", "3s")...)
	if code == 0 || !strings.Contains(errs, "may not admit the join token") {
		t.Errorf("status with the token at a certificates-only coordinator: exit %d, %s", code, errs)
	}
	// A token holder is a worker and a client, never a coordinator.
	conn, err := grpc.NewClient(coord, sec.dial...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pb.NewRaftTransportClient(conn).AppendEntries(ctx, &pb.RaftAppendEntriesRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "token holder") {
		t.Errorf("a token holder speaking raft: %v, want PermissionDenied", err)
	}
	_, err = pb.NewCoordinatorClient(conn).AddCoordinator(ctx, &pb.AddCoordinatorRequest{Id: "evil", Addr: "127.0.0.1:1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a token holder adding a coordinator: %v, want PermissionDenied", err)
	}
	// A coordinator cannot run on the token alone.
	_, errs, code = gencluster(t, "--token-file", filepath.Join(sec.certs, trust.TokenFile), "coordinator", "--id", "cx",
		"--listen", freeAddr(t), "--peers", "cx=127.0.0.1:1", "--data-dir", filepath.Join(t.TempDir(), "cx"))
	if code == 0 || !strings.Contains(errs, "needs --tls-dir") {
		t.Errorf("coordinator with a token only: exit %d, %s", code, errs)
	}

	after, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.GetCoordinators()) != len(before.GetCoordinators()) || len(after.GetJobs()) != len(before.GetJobs()) || after.GetGeneration() != before.GetGeneration() {
		t.Errorf("the refused calls changed the cluster: %d coordinators, %d jobs, generation %d; before %d, %d, %d",
			len(after.GetCoordinators()), len(after.GetJobs()), after.GetGeneration(), len(before.GetCoordinators()), len(before.GetJobs()), before.GetGeneration())
	}
}
