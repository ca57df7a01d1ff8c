package trust

import (
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// The roles' rights on the cluster's servers. A follower forwards a call
// it cannot answer to the leader under its own (coordinator) certificate,
// so every method a follower forwards also admits the coordinator role:
// the caller's role was checked by the follower, on the first hop.
func anyRole() []Role     { return []Role{Coordinator, Worker, Client} }
func workerCalls() []Role { return []Role{Worker, Coordinator} }
func clientCalls() []Role { return []Role{Client, Coordinator} }

// CoordinatorPolicy is what each role may call on a coordinator: raft,
// checkpoint copies and manifests only coordinators; joining, heartbeats, failure
// and progress reports, checkpoint uploads only workers; submitting,
// cancelling and removing coordinators only clients; reads (status,
// checkpoints) and health everyone.
func CoordinatorPolicy() Policy {
	return Policy{
		pb.RaftTransport_AppendEntries_FullMethodName:         {Coordinator},
		pb.RaftTransport_AppendEntriesPipeline_FullMethodName: {Coordinator},
		pb.RaftTransport_RequestVote_FullMethodName:           {Coordinator},
		pb.RaftTransport_RequestPreVote_FullMethodName:        {Coordinator},
		pb.RaftTransport_TimeoutNow_FullMethodName:            {Coordinator},
		pb.RaftTransport_InstallSnapshot_FullMethodName:       {Coordinator},
		pb.Coordinator_AddCoordinator_FullMethodName:          {Coordinator},
		pb.Coordinator_ReplicateCheckpoint_FullMethodName:     {Coordinator},
		pb.Coordinator_RecordCheckpoint_FullMethodName:        {Coordinator},

		pb.Coordinator_Join_FullMethodName:           workerCalls(),
		pb.Coordinator_Heartbeat_FullMethodName:      workerCalls(),
		pb.Coordinator_Leave_FullMethodName:          workerCalls(),
		pb.Coordinator_ReportFailure_FullMethodName:  workerCalls(),
		pb.Coordinator_ReportProgress_FullMethodName: workerCalls(),
		pb.Coordinator_FinishJob_FullMethodName:      workerCalls(),
		pb.Coordinator_ReportUnfit_FullMethodName:    workerCalls(),
		pb.Coordinator_FetchDataset_FullMethodName:   workerCalls(),
		pb.Coordinator_PutCheckpoint_FullMethodName:  workerCalls(),
		pb.Coordinator_PutSample_FullMethodName:      workerCalls(),

		pb.Coordinator_Submit_FullMethodName:            clientCalls(),
		pb.Coordinator_Cancel_FullMethodName:            clientCalls(),
		pb.Coordinator_RemoveCoordinator_FullMethodName: clientCalls(),

		pb.Coordinator_Status_FullMethodName:          anyRole(),
		pb.Coordinator_GetCheckpoint_FullMethodName:   anyRole(),
		pb.Coordinator_ListCheckpoints_FullMethodName: anyRole(),
		healthpb.Health_Check_FullMethodName:          anyRole(),
		healthpb.Health_Watch_FullMethodName:          anyRole(),
		healthpb.Health_List_FullMethodName:           anyRole(),
	}
}

// WorkerPolicy is what each role may call on a worker: only workers push
// ring frames; health (the leader's probe) everyone.
func WorkerPolicy() Policy {
	return Policy{
		pb.AllReduceRing_Push_FullMethodName: {Worker},
		healthpb.Health_Check_FullMethodName: anyRole(),
		healthpb.Health_Watch_FullMethodName: anyRole(),
		healthpb.Health_List_FullMethodName:  anyRole(),
	}
}
