package rafttransport

import (
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// Conversions between raft's RPC structs and the RaftTransport messages of
// api/raft.proto, field by field, both ways. Byte slices are shared, not
// copied: raft never changes a request after sending it, and a received
// message belongs to the handler.

func headerToProto(h raft.RPCHeader) *pb.RaftHeader {
	return &pb.RaftHeader{ProtocolVersion: int32(h.ProtocolVersion), Id: h.ID, Addr: h.Addr}
}

func headerFromProto(h *pb.RaftHeader) raft.RPCHeader {
	return raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersion(h.GetProtocolVersion()),
		ID:              h.GetId(),
		Addr:            h.GetAddr(),
	}
}

func logTypeToProto(t raft.LogType) pb.RaftLogType {
	switch t {
	case raft.LogCommand:
		return pb.RaftLogType_RAFT_LOG_TYPE_COMMAND
	case raft.LogNoop:
		return pb.RaftLogType_RAFT_LOG_TYPE_NOOP
	case raft.LogAddPeerDeprecated:
		return pb.RaftLogType_RAFT_LOG_TYPE_ADD_PEER_DEPRECATED
	case raft.LogRemovePeerDeprecated:
		return pb.RaftLogType_RAFT_LOG_TYPE_REMOVE_PEER_DEPRECATED
	case raft.LogBarrier:
		return pb.RaftLogType_RAFT_LOG_TYPE_BARRIER
	case raft.LogConfiguration:
		return pb.RaftLogType_RAFT_LOG_TYPE_CONFIGURATION
	}
	return pb.RaftLogType_RAFT_LOG_TYPE_UNSPECIFIED
}

func logTypeFromProto(t pb.RaftLogType) (raft.LogType, error) {
	switch t {
	case pb.RaftLogType_RAFT_LOG_TYPE_COMMAND:
		return raft.LogCommand, nil
	case pb.RaftLogType_RAFT_LOG_TYPE_NOOP:
		return raft.LogNoop, nil
	case pb.RaftLogType_RAFT_LOG_TYPE_ADD_PEER_DEPRECATED:
		return raft.LogAddPeerDeprecated, nil
	case pb.RaftLogType_RAFT_LOG_TYPE_REMOVE_PEER_DEPRECATED:
		return raft.LogRemovePeerDeprecated, nil
	case pb.RaftLogType_RAFT_LOG_TYPE_BARRIER:
		return raft.LogBarrier, nil
	case pb.RaftLogType_RAFT_LOG_TYPE_CONFIGURATION:
		return raft.LogConfiguration, nil
	}
	return 0, fmt.Errorf("unknown raft log type %d", int32(t))
}

func logToProto(l *raft.Log) *pb.RaftLog {
	out := &pb.RaftLog{
		Index:      l.Index,
		Term:       l.Term,
		Type:       logTypeToProto(l.Type),
		Data:       l.Data,
		Extensions: l.Extensions,
	}
	if !l.AppendedAt.IsZero() {
		out.AppendedAt = timestamppb.New(l.AppendedAt)
	}
	return out
}

func logFromProto(l *pb.RaftLog) (*raft.Log, error) {
	typ, err := logTypeFromProto(l.GetType())
	if err != nil {
		return nil, fmt.Errorf("log entry %d: %w", l.GetIndex(), err)
	}
	out := &raft.Log{
		Index:      l.GetIndex(),
		Term:       l.GetTerm(),
		Type:       typ,
		Data:       l.GetData(),
		Extensions: l.GetExtensions(),
	}
	if l.GetAppendedAt() != nil {
		out.AppendedAt = l.GetAppendedAt().AsTime()
	}
	return out, nil
}

func appendEntriesRequestToProto(r *raft.AppendEntriesRequest) *pb.RaftAppendEntriesRequest {
	out := &pb.RaftAppendEntriesRequest{
		Header:            headerToProto(r.RPCHeader),
		Term:              r.Term,
		Leader:            r.Leader,
		PrevLogEntry:      r.PrevLogEntry,
		PrevLogTerm:       r.PrevLogTerm,
		LeaderCommitIndex: r.LeaderCommitIndex,
	}
	if len(r.Entries) > 0 {
		out.Entries = make([]*pb.RaftLog, len(r.Entries))
		for i, e := range r.Entries {
			out.Entries[i] = logToProto(e)
		}
	}
	return out
}

func appendEntriesRequestFromProto(r *pb.RaftAppendEntriesRequest) (*raft.AppendEntriesRequest, error) {
	out := &raft.AppendEntriesRequest{
		RPCHeader:         headerFromProto(r.GetHeader()),
		Term:              r.GetTerm(),
		Leader:            r.GetLeader(),
		PrevLogEntry:      r.GetPrevLogEntry(),
		PrevLogTerm:       r.GetPrevLogTerm(),
		LeaderCommitIndex: r.GetLeaderCommitIndex(),
	}
	if n := len(r.GetEntries()); n > 0 {
		out.Entries = make([]*raft.Log, n)
		for i, e := range r.GetEntries() {
			l, err := logFromProto(e)
			if err != nil {
				return nil, err
			}
			out.Entries[i] = l
		}
	}
	return out, nil
}

func appendEntriesResponseToProto(r *raft.AppendEntriesResponse) *pb.RaftAppendEntriesResponse {
	return &pb.RaftAppendEntriesResponse{
		Header:         headerToProto(r.RPCHeader),
		Term:           r.Term,
		LastLog:        r.LastLog,
		Success:        r.Success,
		NoRetryBackoff: r.NoRetryBackoff,
	}
}

func appendEntriesResponseFromProto(r *pb.RaftAppendEntriesResponse) raft.AppendEntriesResponse {
	return raft.AppendEntriesResponse{
		RPCHeader:      headerFromProto(r.GetHeader()),
		Term:           r.GetTerm(),
		LastLog:        r.GetLastLog(),
		Success:        r.GetSuccess(),
		NoRetryBackoff: r.GetNoRetryBackoff(),
	}
}

func requestVoteRequestToProto(r *raft.RequestVoteRequest) *pb.RaftRequestVoteRequest {
	return &pb.RaftRequestVoteRequest{
		Header:             headerToProto(r.RPCHeader),
		Term:               r.Term,
		Candidate:          r.Candidate,
		LastLogIndex:       r.LastLogIndex,
		LastLogTerm:        r.LastLogTerm,
		LeadershipTransfer: r.LeadershipTransfer,
	}
}

func requestVoteRequestFromProto(r *pb.RaftRequestVoteRequest) *raft.RequestVoteRequest {
	return &raft.RequestVoteRequest{
		RPCHeader:          headerFromProto(r.GetHeader()),
		Term:               r.GetTerm(),
		Candidate:          r.GetCandidate(),
		LastLogIndex:       r.GetLastLogIndex(),
		LastLogTerm:        r.GetLastLogTerm(),
		LeadershipTransfer: r.GetLeadershipTransfer(),
	}
}

func requestVoteResponseToProto(r *raft.RequestVoteResponse) *pb.RaftRequestVoteResponse {
	return &pb.RaftRequestVoteResponse{
		Header:  headerToProto(r.RPCHeader),
		Term:    r.Term,
		Peers:   r.Peers,
		Granted: r.Granted,
	}
}

func requestVoteResponseFromProto(r *pb.RaftRequestVoteResponse) raft.RequestVoteResponse {
	return raft.RequestVoteResponse{
		RPCHeader: headerFromProto(r.GetHeader()),
		Term:      r.GetTerm(),
		Peers:     r.GetPeers(),
		Granted:   r.GetGranted(),
	}
}

func requestPreVoteRequestToProto(r *raft.RequestPreVoteRequest) *pb.RaftRequestPreVoteRequest {
	return &pb.RaftRequestPreVoteRequest{
		Header:       headerToProto(r.RPCHeader),
		Term:         r.Term,
		LastLogIndex: r.LastLogIndex,
		LastLogTerm:  r.LastLogTerm,
	}
}

func requestPreVoteRequestFromProto(r *pb.RaftRequestPreVoteRequest) *raft.RequestPreVoteRequest {
	return &raft.RequestPreVoteRequest{
		RPCHeader:    headerFromProto(r.GetHeader()),
		Term:         r.GetTerm(),
		LastLogIndex: r.GetLastLogIndex(),
		LastLogTerm:  r.GetLastLogTerm(),
	}
}

func requestPreVoteResponseToProto(r *raft.RequestPreVoteResponse) *pb.RaftRequestPreVoteResponse {
	return &pb.RaftRequestPreVoteResponse{
		Header:  headerToProto(r.RPCHeader),
		Term:    r.Term,
		Granted: r.Granted,
	}
}

func requestPreVoteResponseFromProto(r *pb.RaftRequestPreVoteResponse) raft.RequestPreVoteResponse {
	return raft.RequestPreVoteResponse{
		RPCHeader: headerFromProto(r.GetHeader()),
		Term:      r.GetTerm(),
		Granted:   r.GetGranted(),
	}
}

func installSnapshotRequestToProto(r *raft.InstallSnapshotRequest) *pb.RaftInstallSnapshotRequest {
	return &pb.RaftInstallSnapshotRequest{
		Header:             headerToProto(r.RPCHeader),
		SnapshotVersion:    int32(r.SnapshotVersion),
		Term:               r.Term,
		Leader:             r.Leader,
		LastLogIndex:       r.LastLogIndex,
		LastLogTerm:        r.LastLogTerm,
		Peers:              r.Peers,
		Configuration:      r.Configuration,
		ConfigurationIndex: r.ConfigurationIndex,
		Size:               r.Size,
	}
}

func installSnapshotRequestFromProto(r *pb.RaftInstallSnapshotRequest) *raft.InstallSnapshotRequest {
	return &raft.InstallSnapshotRequest{
		RPCHeader:          headerFromProto(r.GetHeader()),
		SnapshotVersion:    raft.SnapshotVersion(r.GetSnapshotVersion()),
		Term:               r.GetTerm(),
		Leader:             r.GetLeader(),
		LastLogIndex:       r.GetLastLogIndex(),
		LastLogTerm:        r.GetLastLogTerm(),
		Peers:              r.GetPeers(),
		Configuration:      r.GetConfiguration(),
		ConfigurationIndex: r.GetConfigurationIndex(),
		Size:               r.GetSize(),
	}
}
