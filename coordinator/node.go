package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/grpc"

	"github.com/gencluster/gencluster/raftlog"
	"github.com/gencluster/gencluster/rafttransport"
)

// Defaults of NodeConfig, suited to coordinators on one LAN.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	DefaultCommitTimeout      = 50 * time.Millisecond
	DefaultSnapshotThreshold  = 1024
	DefaultSnapshotInterval   = 30 * time.Second
	DefaultTrailingLogs       = 1024
	// DefaultApplyTimeout bounds Apply, Barrier and membership changes
	// whose ctx has no deadline.
	DefaultApplyTimeout = 10 * time.Second
)

const (
	raftDBFile        = "raft.db"
	snapshotsRetained = 2
	// storeLockTimeout is how long NewNode waits for the data dir's lock:
	// short, so that a second process on the same dir fails at once.
	storeLockTimeout = 200 * time.Millisecond
	logCacheSize     = 512
)

// Errors of the raft node. Every error wraps at most one of them; match
// with errors.Is.
var (
	// ErrNotLeader: the call needs the leader and this node is not it.
	// The error is a *NotLeaderError naming the leader, when known.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrDataDirInUse: another process (or another Node in this one) holds
	// the data dir's raft store.
	ErrDataDirInUse = errors.New("data dir is in use by another gencluster process")
	// ErrRaftStoreCorrupt: DataDir/raft.db is not a readable raft store.
	ErrRaftStoreCorrupt = errors.New("raft store is corrupt")
	// ErrBadPeers: the peer list is malformed, lacks this node, or is
	// missing on a first start.
	ErrBadPeers = errors.New("invalid peer list")
	// ErrPeersMismatch: the peer list contradicts the raft group stored in
	// the data dir.
	ErrPeersMismatch = errors.New("peer list contradicts the raft group stored in the data dir")
	// ErrServerConflict: AddVoter of an id already in the group at another
	// address, or of an address held by another id.
	ErrServerConflict = errors.New("raft server id or address already in use")
)

// NotLeaderError is the ErrNotLeader a follower returns: LeaderID and
// LeaderAddr are the leader it knows of, empty when it knows none.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not the raft leader (no leader known)"
	}
	return fmt.Sprintf("not the raft leader (the leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Peer is one member of the raft group as the --peers flag lists it.
type Peer struct {
	ID   string
	Addr string // host:port, the coordinator's gRPC address
}

func (p Peer) String() string { return p.ID + "=" + p.Addr }

// ParsePeers parses the --peers syntax "id=host:port,id=host:port,...". It
// checks the syntax only; NewNode checks the list as a whole.
func ParsePeers(s string) ([]Peer, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var peers []Peer
	for _, item := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%w: %q is not id=host:port", ErrBadPeers, item)
		}
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// Server states reported by Node.Servers.
const (
	StateLeader      = "leader"
	StateFollower    = "follower"
	StateCandidate   = "candidate"   // this node only
	StateUnreachable = "unreachable" // the leader's view: heartbeats to it fail
	StateUnknown     = "unknown"
	StateShutdown    = "shutdown" // this node only, after Close
)

// Server is one member of the current raft configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
	// State is the best this node knows: its own state; "leader" for the
	// leader; on the leader, "follower" or "unreachable" for the others;
	// "unknown" otherwise.
	State string
}

// NodeConfig configures a Node. ID, Addr, DataDir and FSM are required.
type NodeConfig struct {
	ID string
	// Addr is the advertised host:port: the coordinator's gRPC address as
	// the other coordinators dial it.
	Addr    string
	DataDir string
	// Peers is the whole group (--peers), this node included. It is
	// required on a first start (unless Join), optional on a restart, where
	// it must agree with the group stored in DataDir.
	Peers []Peer
	// Join starts a node with an empty data dir without bootstrapping a
	// group: it waits for a leader to add it (AddVoter). Ignored when
	// DataDir holds state.
	Join bool
	FSM  raft.FSM
	// Logger receives the node's and raft's logs; discarded if nil.
	Logger *slog.Logger

	// Raft tuning; zero means the Default* constant.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	// RPCTimeout bounds one raft RPC to a peer; rafttransport.DefaultTimeout
	// if 0.
	RPCTimeout time.Duration
	// DialOptions for raft connections to peers (credentials); insecure
	// if empty.
	DialOptions []grpc.DialOption
	// RaftFaults, for tests only, makes the raft transport's network
	// misbehave (partitions, lost replies; rafttransport.FaultSet is one
	// that a test changes as it runs). Nil in production.
	RaftFaults rafttransport.Faults
}

func (c *NodeConfig) setDefaults() {
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = DefaultLeaderLeaseTimeout
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Node is this coordinator's member of the raft group: raft itself, its
// bbolt log store, its file snapshot store and its gRPC transport.
type Node struct {
	id     string
	addr   string
	logger *slog.Logger

	raft  *raft.Raft
	trans *rafttransport.Transport
	store *raftboltdb.BoltStore

	notifyCh   chan bool
	obsCh      chan raft.Observation
	observer   *raft.Observer
	registerCh chan func(bool)
	stopCh     chan struct{}
	loopDone   chan struct{}

	mu            sync.Mutex
	leaderChanged chan struct{}          // closed and replaced when the known leader changes
	unreachable   map[raft.ServerID]bool // on the leader: peers whose heartbeats fail
	leaderChanges uint64                 // leader changes observed (guarded by mu)

	closeOnce sync.Once
	closeDone chan struct{}
	closeErr  error
}

// NewNode opens (or creates) the raft state in cfg.DataDir, registers the
// raft transport on srv (which must not be serving yet) and starts raft.
//
// Start rules, as etcd's --initial-cluster and rqlite's bootstrap:
//   - no state, Peers given: bootstrap the group from Peers, once;
//   - no state, no Peers: an error (unless Join: wait to be added);
//   - state and Peers: Peers must name the same servers as the stored
//     configuration, or NewNode fails naming the difference;
//   - state, no Peers: restart with the stored configuration.
//
// It never starts a second group over existing state. Every check of the
// data dir and the peer list runs before the transport is registered on
// srv; if NewNode fails later (raft itself refuses to start), srv holds a
// dead transport and must not be reused.
func NewNode(ctx context.Context, cfg NodeConfig, srv *grpc.Server) (*Node, error) {
	cfg.setDefaults()
	if err := validateNodeConfig(&cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logger := cfg.Logger

	store, err := openRaftStore(filepath.Join(cfg.DataDir, raftDBFile))
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			store.Close()
		}
	}()
	hlog := raftlog.New(logger, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, hlog.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("data dir %s: snapshot store: %w", cfg.DataDir, err)
	}
	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: read raft state: %w", cfg.DataDir, err)
	}

	var bootstrap *raft.Configuration
	switch {
	case hasState && len(cfg.Peers) > 0:
		stored, err := storedConfiguration(store, snaps)
		if err != nil {
			return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
		}
		if err := comparePeers(cfg.DataDir, stored, cfg.Peers); err != nil {
			return nil, err
		}
	case hasState:
		logger.Info("restarting with the raft group stored in the data dir", "data_dir", cfg.DataDir)
	case cfg.Join:
		logger.Info("empty data dir: waiting to be added to a raft group", "data_dir", cfg.DataDir)
	case len(cfg.Peers) == 0:
		return nil, fmt.Errorf("%w: data dir %s holds no raft state: the first start needs --peers (the whole group, this node included)", ErrBadPeers, cfg.DataDir)
	default:
		c := raft.Configuration{}
		for _, p := range cfg.Peers {
			c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		bootstrap = &c
	}

	clusterID, err := storedClusterID(store)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	if bootstrap != nil {
		// Recomputed on every first start: an id left by a start that
		// failed before bootstrapping must not outlive a corrected list.
		clusterID = clusterIDFor(cfg.Peers)
		if err := store.Set(clusterIDKey, []byte(clusterID)); err != nil {
			return nil, fmt.Errorf("data dir %s: store the cluster id: %w", cfg.DataDir, err)
		}
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hlog
	n := &Node{
		id:            cfg.ID,
		addr:          cfg.Addr,
		logger:        logger,
		store:         store,
		notifyCh:      make(chan bool, 16),
		obsCh:         make(chan raft.Observation, 256),
		registerCh:    make(chan func(bool)),
		stopCh:        make(chan struct{}),
		loopDone:      make(chan struct{}),
		leaderChanged: make(chan struct{}),
		unreachable:   make(map[raft.ServerID]bool),
		closeDone:     make(chan struct{}),
	}
	rc.NotifyCh = n.notifyCh
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}
	logs, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}

	trans, err := rafttransport.New(rafttransport.Config{
		Addr:        cfg.Addr,
		Timeout:     cfg.RPCTimeout,
		DialOptions: cfg.DialOptions,
		Logger:      logger,
		Faults:      cfg.RaftFaults,
	}, srv)
	if err != nil {
		return nil, err
	}
	n.trans = trans
	trans.SetCluster(clusterID, func(id string) error {
		if err := store.Set(clusterIDKey, []byte(id)); err != nil {
			return err
		}
		logger.Info("adopted the raft group's cluster id", "cluster_id", id)
		return nil
	})
	r, err := raft.NewRaft(rc, cfg.FSM, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		return nil, fmt.Errorf("start raft in %s: %w", cfg.DataDir, err)
	}
	n.raft = r
	trans.SetAppendEntriesRewrite(func(req *raft.AppendEntriesRequest) {
		if prevCoveredBySnapshot(req, r.LastIndex(), logs, snaps) {
			logger.Info("previous log entry is covered by the local snapshot: skipping raft's check of it",
				"prev_index", req.PrevLogEntry, "prev_term", req.PrevLogTerm)
			req.PrevLogEntry, req.PrevLogTerm = 0, 0
		}
	})
	n.observer = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)
	go n.loop()
	ok = true

	if bootstrap != nil {
		err := n.wait(ctx, r.BootstrapCluster(*bootstrap))
		switch {
		case err == nil:
			logger.Info("bootstrapped a new raft group", "peers", cfg.Peers)
		case errors.Is(err, raft.ErrCantBootstrap):
			// Benign: state appeared between the check and the call.
		default:
			cerr := n.Close(context.Background())
			return nil, errors.Join(fmt.Errorf("bootstrap raft group: %w", err), cerr)
		}
	}
	return n, nil
}

// clusterIDKey holds the raft group's id in the stable store (raft's own
// keys there are CurrentTerm, LastVoteTerm and LastVoteCand).
var clusterIDKey = []byte("gencluster.ClusterID")

// clusterIDFor is the id of the group bootstrapped from peers: every
// bootstrapping member computes the same one, and two groups share it
// only if they list the same servers at the same addresses (then they are
// one group, as far as the network can tell).
func clusterIDFor(peers []Peer) string {
	lines := make([]string, len(peers))
	for i, p := range peers {
		lines[i] = p.String() + "\n"
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "")))
	return hex.EncodeToString(sum[:8])
}

func storedClusterID(store *raftboltdb.BoltStore) (string, error) {
	b, err := store.Get(clusterIDKey)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the cluster id: %w", err)
	}
	return string(b), nil
}

func validateNodeConfig(cfg *NodeConfig) error {
	if cfg.ID == "" {
		return errors.New("raft node: empty id")
	}
	if err := checkAddr(cfg.Addr); err != nil {
		return fmt.Errorf("raft node %s: advertised address: %w", cfg.ID, err)
	}
	if cfg.DataDir == "" {
		return fmt.Errorf("raft node %s: empty data dir", cfg.ID)
	}
	if cfg.FSM == nil {
		return fmt.Errorf("raft node %s: nil FSM", cfg.ID)
	}
	if len(cfg.Peers) > 0 {
		return validatePeers(cfg.ID, cfg.Addr, cfg.Peers)
	}
	return nil
}

// checkAddr accepts host:port with a non-empty host that peers can dial
// (not 0.0.0.0 or ::) and a port in 1..65535.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q is not an address peers can dial", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// validatePeers checks a peer list: valid addresses, unique ids and
// addresses, this node present with its own address.
func validatePeers(selfID, selfAddr string, peers []Peer) error {
	ids := make(map[string]string, len(peers))
	addrs := make(map[string]string, len(peers))
	for _, p := range peers {
		if p.ID == "" {
			return fmt.Errorf("%w: a peer with an empty id (%q)", ErrBadPeers, p.String())
		}
		if err := checkAddr(p.Addr); err != nil {
			return fmt.Errorf("%w: peer %s: %w", ErrBadPeers, p.ID, err)
		}
		if _, dup := ids[p.ID]; dup {
			return fmt.Errorf("%w: peer id %s listed twice", ErrBadPeers, p.ID)
		}
		if other, dup := addrs[p.Addr]; dup {
			return fmt.Errorf("%w: peers %s and %s share the address %s", ErrBadPeers, other, p.ID, p.Addr)
		}
		ids[p.ID], addrs[p.Addr] = p.Addr, p.ID
	}
	addr, ok := ids[selfID]
	if !ok {
		return fmt.Errorf("%w: this node (%s) is not in the peer list %s", ErrBadPeers, selfID, formatPeers(peers))
	}
	if addr != selfAddr {
		return fmt.Errorf("%w: the peer list gives this node (%s) the address %s, but it advertises %s", ErrBadPeers, selfID, addr, selfAddr)
	}
	return nil
}

func formatPeers(peers []Peer) string {
	s := make([]string, len(peers))
	for i, p := range peers {
		s[i] = p.String()
	}
	slices.Sort(s)
	return "[" + strings.Join(s, ",") + "]"
}

// comparePeers fails unless peers names exactly the servers (ids and
// addresses) of the stored configuration.
func comparePeers(dataDir string, stored raft.Configuration, peers []Peer) error {
	storedPeers := make([]Peer, 0, len(stored.Servers))
	have := make(map[string]string, len(stored.Servers))
	for _, s := range stored.Servers {
		storedPeers = append(storedPeers, Peer{ID: string(s.ID), Addr: string(s.Address)})
		have[string(s.ID)] = string(s.Address)
	}
	want := make(map[string]string, len(peers))
	var diffs []string
	for _, p := range peers {
		want[p.ID] = p.Addr
		addr, ok := have[p.ID]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s is not in the stored group", p))
		case addr != p.Addr:
			diffs = append(diffs, fmt.Sprintf("%s is at %s in the stored group, at %s in the peer list", p.ID, addr, p.Addr))
		}
	}
	for _, p := range storedPeers {
		if _, ok := want[p.ID]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s is missing from the peer list", p))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	return fmt.Errorf("%w: data dir %s belongs to the raft group %s, the peer list says %s: %s. "+
		"Start without --peers to rejoin with the stored group, or use an empty data dir for a new group",
		ErrPeersMismatch, dataDir, formatPeers(storedPeers), formatPeers(peers), strings.Join(diffs, "; "))
}

// openRaftStore opens DataDir/raft.db. Its bbolt file lock is the data
// dir's lock: a second opener fails after storeLockTimeout. Before raft
// sees the file, it is walked once, with faults turned into panics and
// panics into ErrRaftStoreCorrupt, so that a damaged file is an error here
// rather than a crash inside raft.
func openRaftStore(path string) (*raftboltdb.BoltStore, error) {
	if err := checkRaftStore(path); err != nil {
		return nil, err
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: storeLockTimeout},
	})
	if err != nil {
		return nil, classifyBoltError(path, err)
	}
	return store, nil
}

func classifyBoltError(path string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("%w (%s is locked)", ErrDataDirInUse, path)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return fmt.Errorf("%w: %s is not a valid bbolt raft store: %w", ErrRaftStoreCorrupt, path, err)
	}
	return fmt.Errorf("open raft store %s: %w", path, err)
}

// checkRaftStore opens path with bbolt, checks that its buckets are raft's
// and reads every log entry's page, then closes it. A missing file is fine.
func checkRaftStore(path string) (err error) {
	if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bbolt.DB
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrRaftStoreCorrupt, path, r)
		}
		if db != nil {
			if cerr := db.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close raft store %s: %w", path, cerr)
			}
		}
	}()
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: storeLockTimeout})
	if err != nil {
		db = nil
		return classifyBoltError(path, err)
	}
	return db.View(func(tx *bbolt.Tx) error {
		var others []string
		empty := true
		if err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			empty = false
			if n := string(name); n != "logs" && n != "conf" {
				others = append(others, n)
			}
			return nil
		}); err != nil {
			return err
		}
		if !empty && (len(others) > 0 || tx.Bucket([]byte("logs")) == nil || tx.Bucket([]byte("conf")) == nil) {
			return fmt.Errorf("%w: %s is a bbolt file but not a raft store (buckets %v)", ErrRaftStoreCorrupt, path, others)
		}
		if b := tx.Bucket([]byte("logs")); b != nil {
			return b.ForEach(func(k, v []byte) error {
				if len(k) != 8 {
					return fmt.Errorf("%w: %s: a log key of %d bytes", ErrRaftStoreCorrupt, path, len(k))
				}
				return nil
			})
		}
		return nil
	})
}

// storedConfiguration is the latest configuration in the stores, as raft
// computes it at start: the newest configuration entry of the log, else
// that of the newest snapshot.
func storedConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil { // raft.DecodeConfiguration panics on bad input
			err = fmt.Errorf("%w: undecodable configuration: %v", ErrRaftStoreCorrupt, r)
		}
	}()
	var snapIndex uint64
	metas, err := snaps.List()
	if err != nil {
		return c, fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) > 0 {
		c, snapIndex = metas[0].Configuration, metas[0].ConfigurationIndex
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return c, fmt.Errorf("read raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return c, fmt.Errorf("read raft log: %w", err)
	}
	for i := last; i >= first && i > snapIndex && i > 0; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			return c, fmt.Errorf("%w: log entry %d: %w", ErrRaftStoreCorrupt, i, err)
		}
		if l.Type == raft.LogConfiguration {
			return raft.DecodeConfiguration(l.Data), nil
		}
	}
	return c, nil
}

// prevCoveredBySnapshot reports whether an AppendEntries' previous entry
// is missing from the log but is the last entry of a local snapshot, with
// the same term. It works around a livelock in hashicorp/raft v1.7.3: a
// follower that installed a snapshot at index S keeps no log entry S, so
// once it also holds entries after S (it appended some, then the ack was
// lost or it restarted before acking), raft's check of PrevLogEntry == S
// looks S up in the log, fails, and the leader answers with the same
// snapshot again, forever. The check is in fact satisfied: the snapshot
// holds committed state up to S, taken at term PrevLogTerm, so the logs
// match up to S and the request may skip the check (PrevLogEntry 0). An
// entry S that is present, even with another term, is left to raft.
func prevCoveredBySnapshot(req *raft.AppendEntriesRequest, lastIndex uint64, logs raft.LogStore, snaps raft.SnapshotStore) bool {
	prev := req.PrevLogEntry
	if prev == 0 || prev >= lastIndex {
		return false // raft compares with its last entry, in memory
	}
	var l raft.Log
	if err := logs.GetLog(prev, &l); !errors.Is(err, raft.ErrLogNotFound) {
		return false
	}
	metas, err := snaps.List()
	if err != nil {
		return false
	}
	for _, m := range metas {
		if m.Index == prev && m.Term == req.PrevLogTerm {
			return true
		}
	}
	return false
}

// loop delivers leadership changes to the OnLeadershipChange callbacks and
// keeps track of raft's observations.
func (n *Node) loop() {
	defer close(n.loopDone)
	leader := false
	var fns []func(bool)
	for {
		select {
		case v := <-n.notifyCh:
			if v == leader {
				continue
			}
			leader = v
			n.mu.Lock()
			clear(n.unreachable)
			n.mu.Unlock()
			n.logger.Info("raft leadership changed", "leader", v)
			for _, fn := range fns {
				fn(v)
			}
		case fn := <-n.registerCh:
			fns = append(fns, fn)
			if leader {
				fn(true)
			}
		case o := <-n.obsCh:
			n.mu.Lock()
			switch d := o.Data.(type) {
			case raft.LeaderObservation:
				n.leaderChanges++
				close(n.leaderChanged)
				n.leaderChanged = make(chan struct{})
			case raft.FailedHeartbeatObservation:
				n.unreachable[d.PeerID] = true
			case raft.ResumedHeartbeatObservation:
				delete(n.unreachable, d.PeerID)
			}
			n.mu.Unlock()
		case <-n.stopCh:
			if leader {
				for _, fn := range fns {
					fn(false)
				}
			}
			return
		}
	}
}

// OnLeadershipChange registers fn, called with true when this node becomes
// the leader and with false when it stops being it (at the latest in
// Close). If the node leads already, fn(true) comes at once. Calls come
// one at a time from one goroutine: fn must return quickly and must not
// call OnLeadershipChange.
func (n *Node) OnLeadershipChange(fn func(isLeader bool)) {
	select {
	case n.registerCh <- fn:
	case <-n.stopCh:
	}
}

// ID is this node's raft server id; Addr its advertised address.
func (n *Node) ID() string   { return n.id }
func (n *Node) Addr() string { return n.addr }

// ClusterID is the raft group's id (see RaftHeader.cluster_id in
// api/raft.proto); empty on a joining node until a leader contacts it.
func (n *Node) ClusterID() string { return n.trans.ClusterID() }

// Unreachable describes the raft peers this node's last calls to failed,
// in address order, each with why and for how long ("" if none): what a
// coordinator without a leader tells its readiness probe.
func (n *Node) Unreachable(ctx context.Context) string {
	failing := n.trans.Unreachable()
	ctx, cancel := context.WithTimeout(ctx, time.Second) // the look-ups share a second
	defer cancel()
	var parts []string
	for _, addr := range slices.Sorted(maps.Keys(failing)) {
		f := failing[addr]
		parts = append(parts, fmt.Sprintf("%s for %s: %v", addr, time.Since(f.Since).Round(time.Second), explainDial(ctx, string(addr), f.Err)))
	}
	return strings.Join(parts, "; ")
}

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader is the leader this node knows of; empty strings if none.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// RaftStats is a reading of a node's raft state, for metrics.
type RaftStats struct {
	State                                         string // "Leader", "Follower", "Candidate", "Shutdown"
	Term, CommitIndex, AppliedIndex, LastLogIndex uint64
	// LeaderChanges counts the leader changes this node has seen since it
	// started (a leader lost counts as one).
	LeaderChanges uint64
	HasLeader     bool
}

// RaftStats reads the node's raft state.
func (n *Node) RaftStats() RaftStats {
	st := n.raft.Stats()
	num := func(k string) uint64 {
		v, _ := strconv.ParseUint(st[k], 10, 64)
		return v
	}
	_, leader := n.raft.LeaderWithID()
	n.mu.Lock()
	changes := n.leaderChanges
	n.mu.Unlock()
	return RaftStats{State: n.raft.State().String(), Term: num("term"), CommitIndex: num("commit_index"),
		AppliedIndex: num("applied_index"), LastLogIndex: num("last_log_index"), LeaderChanges: changes, HasLeader: leader != ""}
}

// AppliedIndex is the index of the last log entry applied to the FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// WaitLeader waits until this node knows a leader (itself or another).
func (n *Node) WaitLeader(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond) // a fallback for a dropped observation
	defer tick.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		n.mu.Lock()
		changed := n.leaderChanged
		n.mu.Unlock()
		select {
		case <-changed:
		case <-tick.C:
		case <-n.closeDone:
			return fmt.Errorf("wait for a raft leader: %w", raft.ErrRaftShutdown)
		case <-ctx.Done():
			return fmt.Errorf("wait for a raft leader: %w", ctx.Err())
		}
	}
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// raftTimeout turns ctx's deadline into raft's timeout argument.
func raftTimeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if d, ok := ctx.Deadline(); ok {
		t := time.Until(d)
		if t <= 0 {
			return 0, context.DeadlineExceeded
		}
		return t, nil
	}
	return DefaultApplyTimeout, nil
}

// wait waits for a raft future or ctx. If ctx ends first, the operation
// may still complete; the goroutine waiting for it ends when raft answers
// (at the latest when it shuts down).
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// raftErr maps raft's errors: not-leader errors become a *NotLeaderError,
// the rest are wrapped.
func (n *Node) raftErr(op string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		return n.notLeader()
	}
	return fmt.Errorf("raft %s on %s: %w", op, n.id, err)
}

// Apply proposes cmd and returns the FSM's response once this node has
// applied it. A response that is an error is returned as the error, as is
// (so errors.Is works on the FSM's own errors); any other response is
// returned as the value. On a follower it returns a *NotLeaderError. The
// timeout is ctx's deadline, DefaultApplyTimeout without one. If ctx ends
// first, or raft reports raft.ErrLeadershipLost, the command may or may not
// be committed.
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) {
	to, err := raftTimeout(ctx)
	if err != nil {
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	f := n.raft.Apply(cmd, to)
	if err := n.wait(ctx, f); err != nil {
		return nil, n.raftErr("apply", err)
	}
	resp := f.Response()
	if rerr, ok := resp.(error); ok {
		return nil, rerr
	}
	return resp, nil
}

// Barrier waits until every entry committed before it is applied to this
// node's FSM. Leader only.
func (n *Node) Barrier(ctx context.Context) error {
	to, err := raftTimeout(ctx)
	if err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	if err := n.wait(ctx, n.raft.Barrier(to)); err != nil {
		return n.raftErr("barrier", err)
	}
	return nil
}

// Snapshot makes raft take a snapshot now (and truncate its log as
// TrailingLogs allows). raft.ErrNothingNewToSnapshot is returned wrapped.
func (n *Node) Snapshot(ctx context.Context) error {
	if err := n.wait(ctx, n.raft.Snapshot()); err != nil {
		return n.raftErr("snapshot", err)
	}
	return nil
}

func (n *Node) configuration(ctx context.Context) (raft.Configuration, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := n.wait(ctx, f); err != nil {
		return raft.Configuration{}, 0, n.raftErr("get configuration", err)
	}
	return f.Configuration(), f.Index(), nil
}

// Servers lists the current configuration, with each server's state as
// this node best knows it.
func (n *Node) Servers(ctx context.Context) ([]Server, error) {
	c, _, err := n.configuration(ctx)
	if err != nil {
		return nil, err
	}
	leaderID, _ := n.Leader()
	self := n.raft.State()
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Server, 0, len(c.Servers))
	for _, s := range c.Servers {
		st := StateUnknown
		switch {
		case string(s.ID) == n.id:
			st = strings.ToLower(self.String())
		case string(s.ID) == leaderID:
			st = StateLeader
		case self == raft.Leader && n.unreachable[s.ID]:
			st = StateUnreachable
		case self == raft.Leader:
			st = StateFollower
		}
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter, State: st})
	}
	return out, nil
}

// AddVoter adds (or promotes) a voting member. It is a no-op if id is a
// voter at addr already; an id in the group at another address, or an
// address held by another id, is ErrServerConflict (remove it first).
// Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if id == "" {
		return fmt.Errorf("%w: add voter: empty id", ErrBadPeers)
	}
	if err := checkAddr(addr); err != nil {
		return fmt.Errorf("%w: add voter %s: %w", ErrBadPeers, id, err)
	}
	if !n.IsLeader() {
		return n.notLeader()
	}
	c, index, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	for _, s := range c.Servers {
		switch {
		case string(s.ID) == id && string(s.Address) == addr:
			if s.Suffrage == raft.Voter {
				return nil
			}
		case string(s.ID) == id:
			return fmt.Errorf("%w: %s is in the raft group at %s, not %s", ErrServerConflict, id, s.Address, addr)
		case string(s.Address) == addr:
			return fmt.Errorf("%w: %s is the address of %s in the raft group, not of %s", ErrServerConflict, addr, s.ID, id)
		}
	}
	to, err := raftTimeout(ctx)
	if err != nil {
		return fmt.Errorf("raft add voter: %w", err)
	}
	if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), index, to)); err != nil {
		return n.raftErr("add voter "+id, err)
	}
	n.logger.Info("added raft voter", "id", id, "addr", addr)
	return nil
}

// RemoveServer removes a member; a no-op if id is not in the group.
// Leader only. A leader that removes itself steps down.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	c, index, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return nil
	}
	to, err := raftTimeout(ctx)
	if err != nil {
		return fmt.Errorf("raft remove server: %w", err)
	}
	if err := n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), index, to)); err != nil {
		return n.raftErr("remove server "+id, err)
	}
	n.logger.Info("removed raft server", "id", id)
	return nil
}

// Lag returns the index of the last log entry this node has applied and
// of the last one it knows to be committed.
func (n *Node) Lag() (applied, committed uint64) {
	committed, _ = strconv.ParseUint(n.raft.Stats()["commit_index"], 10, 64)
	return n.raft.AppliedIndex(), committed
}

// TransferLeadership hands the lead to another voter if this node leads
// (for a graceful stop: the group has a new leader within a round trip
// instead of an election timeout). It returns once the transfer is done,
// or failed, or ctx ended; a node that does not lead, or leads alone,
// has nothing to hand over (nil).
func (n *Node) TransferLeadership(ctx context.Context) error {
	if !n.IsLeader() {
		return nil
	}
	c, _, err := n.configuration(ctx)
	if err != nil {
		return err
	}
	others := 0
	for _, s := range c.Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.id {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	if err := n.wait(ctx, n.raft.LeadershipTransfer()); err != nil {
		return n.raftErr("transfer leadership", err)
	}
	id, addr := n.Leader()
	n.logger.Info("leadership transferred", "to", id, "addr", addr)
	return nil
}

// Close shuts raft down (no leadership transfer), then closes the
// transport and the stores. It is idempotent; if ctx ends first, Close
// returns ctx's error and the shutdown goes on in the background (a later
// Close waits for it again).
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() { go n.shutdown() })
	select {
	case <-n.closeDone:
		return n.closeErr
	case <-ctx.Done():
		return fmt.Errorf("close raft node %s: %w", n.id, ctx.Err())
	}
}

func (n *Node) shutdown() {
	var errs []error
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shut down raft: %w", err))
	}
	n.raft.DeregisterObserver(n.observer)
	close(n.stopCh)
	<-n.loopDone
	if err := n.trans.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft store: %w", err))
	}
	n.closeErr = errors.Join(errs...)
	close(n.closeDone)
}
