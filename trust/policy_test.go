package trust

import (
	"slices"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// methods lists the full method names of the services a server serves.
func methods(descs ...*grpc.ServiceDesc) []string {
	var out []string
	for _, d := range descs {
		for _, m := range d.Methods {
			out = append(out, "/"+d.ServiceName+"/"+m.MethodName)
		}
		for _, s := range d.Streams {
			out = append(out, "/"+d.ServiceName+"/"+s.StreamName)
		}
	}
	return out
}

// The policies name exactly the methods their servers serve: a new RPC
// must be given its roles here (the guard refuses a method it does not
// know, so a forgotten one would fail closed, but silently for the tests
// that use plaintext).
func TestPoliciesCoverEveryMethod(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy Policy
		descs  []*grpc.ServiceDesc
	}{
		{"coordinator", CoordinatorPolicy(), []*grpc.ServiceDesc{&pb.Coordinator_ServiceDesc, &pb.RaftTransport_ServiceDesc, &healthpb.Health_ServiceDesc}},
		{"worker", WorkerPolicy(), []*grpc.ServiceDesc{&pb.AllReduceRing_ServiceDesc, &healthpb.Health_ServiceDesc}},
	} {
		served := methods(c.descs...)
		for _, m := range served {
			if len(c.policy[m]) == 0 {
				t.Errorf("%s policy: %s has no roles", c.name, m)
			}
		}
		for m := range c.policy {
			if !slices.Contains(served, m) {
				t.Errorf("%s policy: %s is not served", c.name, m)
			}
		}
	}
	// The rights that matter most, spelt out.
	p := CoordinatorPolicy()
	for m, want := range map[string][]Role{
		pb.RaftTransport_AppendEntries_FullMethodName: {Coordinator},
		pb.Coordinator_AddCoordinator_FullMethodName:  {Coordinator},
		pb.Coordinator_Submit_FullMethodName:          {Client, Coordinator},
		pb.Coordinator_FinishJob_FullMethodName:       {Worker, Coordinator},
	} {
		if !slices.Equal(p[m], want) {
			t.Errorf("%s: roles %v, want %v", m, p[m], want)
		}
	}
	if w := WorkerPolicy()[pb.AllReduceRing_Push_FullMethodName]; !slices.Equal(w, []Role{Worker}) {
		t.Errorf("ring push: roles %v, want only worker", w)
	}
}
