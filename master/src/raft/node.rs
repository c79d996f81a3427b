//! [`RaftNode`]: one master's running Raft. It opens the log store and the state machine in the
//! data directory, starts openraft with the election timeouts of this node's slot, plugs the
//! Raft into the [`RaftInbox`], and offers the service what it needs: `write` a command,
//! `read_linearizable`, `metrics`, membership changes and `shutdown`.
//!
//! Must not depend on the master's service, registry or repair, nor on a concrete transport.

use super::network::{Network, RaftInbox};
use super::state_machine::{SnapshotCounters, StateMachine};
use super::{LogStore, NodeId, TypeConfig};
use crate::engine::{Command, Engine, Output};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use quarry_proto::{FsError, Timestamp};
use quarry_transport::RpcClient;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one log entry, and most such entries in flight at once (openraft 0.9
/// writes its log once per client write, so grouping is what lets concurrent requests share
/// one fsync and one replication round).
const MAX_BATCH: usize = 256;
const MAX_BATCHES_IN_FLIGHT: usize = 4;

type Submission = (Command, oneshot::Sender<Result<Output, FsError>>);

/// Longest [`RaftNode::shutdown`] waits for openraft's tasks to release the log store.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Pause before another leadership confirmation round after one missed its quorum.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How many disjoint election-timeout ranges there are; node `id` uses range `(id - 1) % 8`.
pub const ELECTION_SLOTS: u64 = 8;

/// Raft timing and compaction settings, and the initial state. Every master of a cluster must
/// use the same `chunk_size` and `root_goal`: they define the state before log index 1.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// The leader's heartbeat period; openraft also uses it as the timeout of one
    /// `RaftAppend` call, and ticks every 1.5 of it.
    pub heartbeat_interval_ms: u64,
    /// Start of slot 0's election timeout range.
    pub election_timeout_base_ms: u64,
    /// Distance between the starts of two consecutive slots.
    pub election_slot_ms: u64,
    /// Width of each slot's range (a random timeout is drawn in it once per process); the rest
    /// of the slot is a gap that no node's timeout falls in.
    pub election_jitter_ms: u64,
    /// A snapshot is built once this many entries were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot (for followers slightly behind).
    pub max_in_snapshot_log_to_keep: u64,
    /// Bound on one snapshot chunk, kept below the frame's 4 MiB payload cap.
    pub snapshot_chunk_bytes: u64,
    /// Timeout of each snapshot chunk call.
    pub install_snapshot_timeout_ms: u64,
    /// Bound on `write`, `read_linearizable` and membership changes.
    pub request_timeout_ms: u64,
    /// How long after a leadership confirmation round began the leader serves linearizable
    /// reads from its own state without another round (a leader lease, Raft thesis §6.4.1);
    /// 0 confirms every read. At most half of `election_timeout_base_ms`: a follower that
    /// acknowledged the round refuses every vote for its own maximum election timeout after
    /// it, so no other leader can exist until well after the lease ends.
    pub read_lease_ms: u64,
    /// Initial engine: chunk size and root replication goal.
    pub chunk_size: u64,
    pub root_goal: u32,
}

impl Default for RaftConfig {
    /// Production defaults: heartbeats every 75 ms; node 1 times out between 400 and 420 ms,
    /// node 2 between 610 and 630 ms, node 3 between 820 and 840 ms, ... A follower that has
    /// seen a leader waits its own maximum (openraft's leader lease) plus its timeout before it
    /// stands, and refuses votes until its own lease has run out, so a failover takes about
    /// 0.9 s when node 1 survives and 1.35 s when nodes 2 and 3 do (measured over
    /// `MemNetwork`, `failover_with_default_timings`).
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 75,
            election_timeout_base_ms: 400,
            election_slot_ms: 210,
            election_jitter_ms: 20,
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            install_snapshot_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            read_lease_ms: 200,
            chunk_size: quarry_proto::DEFAULT_CHUNK_SIZE,
            root_goal: 3,
        }
    }
}

impl RaftConfig {
    /// The election timeout range `[min, max)` of node `id`.
    ///
    /// openraft 0.9.25 draws one election timeout per process (`EngineConfig::new`), so two
    /// survivors whose draws are close can time out together after every split vote, forever.
    /// We give each node id its own range instead: slot `(id - 1) % ELECTION_SLOTS` starts at
    /// `base + slot * slot_ms` and is `jitter_ms` wide, and the gap to the next slot
    /// (`slot_ms - jitter_ms`, larger than a tick of 1.5 heartbeats plus a round trip) keeps
    /// any two nodes in distinct slots from timing out together: the one in the lower slot
    /// asks first, and its vote requests arrive before the other's timer fires. The gap must
    /// be at least [`Self::min_election_gap_ms`]. Ids that are equal modulo 8 share a range
    /// (randomized within it).
    pub fn election_timeout_range(&self, id: NodeId) -> (u64, u64) {
        let slot = id.wrapping_sub(1) % ELECTION_SLOTS;
        let min = self.election_timeout_base_ms + slot * self.election_slot_ms;
        (min, min + self.election_jitter_ms.max(1))
    }

    /// The smallest gap between two slots' ranges that keeps their elections apart: one
    /// election tick (openraft checks timeouts every 1.5 heartbeats, at an arbitrary phase per
    /// node) plus one heartbeat interval for the vote request to arrive (openraft's own bound
    /// on a call).
    pub fn min_election_gap_ms(&self) -> u64 {
        self.heartbeat_interval_ms * 3 / 2 + self.heartbeat_interval_ms
    }

    fn openraft_config(&self, id: NodeId) -> anyhow::Result<openraft::Config> {
        let gap = self
            .election_slot_ms
            .saturating_sub(self.election_jitter_ms);
        anyhow::ensure!(
            gap >= self.min_election_gap_ms(),
            "election slot {} ms minus jitter {} ms leaves a gap of {gap} ms, below {} ms",
            self.election_slot_ms,
            self.election_jitter_ms,
            self.min_election_gap_ms()
        );
        anyhow::ensure!(
            self.read_lease_ms * 2 <= self.election_timeout_base_ms,
            "read lease {} ms is more than half the election timeout {} ms",
            self.read_lease_ms,
            self.election_timeout_base_ms
        );
        anyhow::ensure!(
            self.snapshot_chunk_bytes > 0
                && self.snapshot_chunk_bytes + (64 << 10)
                    <= u64::from(quarry_proto::frame::MAX_PAYLOAD_BYTES),
            "snapshot chunk of {} bytes does not fit a frame's payload",
            self.snapshot_chunk_bytes
        );
        let (min, max) = self.election_timeout_range(id);
        let config = openraft::Config {
            cluster_name: "quarry-masters".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: min,
            election_timeout_max: max,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            ..Default::default()
        };
        Ok(config.validate()?)
    }

    fn initial_engine(&self) -> Engine {
        Engine::new(self.chunk_size, Timestamp::default()).with_root_goal(self.root_goal)
    }
}

/// A node's role, as `quarry status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRole {
    Leader,
    Candidate,
    Follower,
    Learner,
    Shutdown,
}

/// What one master reports about its Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftMetricsView {
    pub id: NodeId,
    pub role: RaftRole,
    pub term: u64,
    /// The highest log index this node knows to be committed (persisted with the log).
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The index the newest snapshot covers, and the last index purged from the log.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub leader_id: Option<NodeId>,
    pub leader_addr: Option<String>,
    /// Voting members and their addresses.
    pub voters: BTreeMap<NodeId, String>,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    /// Linearizable reads served under the read lease, and those that confirmed leadership
    /// with a quorum first, since this node started.
    pub lease_reads: u64,
    pub confirmed_reads: u64,
}

/// One master's running Raft.
pub struct RaftNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    engine: Arc<RwLock<Engine>>,
    inbox: RaftInbox,
    peers: BTreeMap<NodeId, String>,
    log: LogStore,
    counters: Arc<SnapshotCounters>,
    request_timeout: Duration,
    /// Writes go through the batcher task.
    submit: mpsc::Sender<Submission>,
    read_lease: Duration,
    /// The newest leadership confirmation, while it may still serve reads.
    lease: Mutex<Option<ReadLease>>,
    lease_reads: AtomicU64,
    confirmed_reads: AtomicU64,
}

/// Reads may be served locally until `until`, while this node is still the leader of `term`:
/// a quorum acknowledged heartbeats of `term` sent after `until - read_lease`, and each of
/// those voters refuses any candidate for at least its own election timeout after it heard one
/// (openraft's leader lease), which is at least twice the read lease. Everything committed
/// before the confirmation round began was applied by its end, and what this leader commits
/// after is applied here before it is acknowledged, so the local engine is as new as any read
/// that starts within the lease may observe.
#[derive(Clone, Copy, Debug)]
struct ReadLease {
    term: u64,
    until: tokio::time::Instant,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn not_leader(leader: Option<String>) -> FsError {
    FsError::NotLeader { hint: leader }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, String>>) -> FsError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_node),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            FsError::InvalidArgument(format!("membership change: {e}"))
        }
        RaftError::Fatal(e) => FsError::Unavailable(format!("raft stopped: {e}")),
    }
}

/// One committed write of `cmd`, within `timeout`.
async fn write_once(
    raft: &Raft<TypeConfig>,
    cmd: Command,
    timeout: Duration,
) -> Result<Output, FsError> {
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Ok(Ok(resp)) => resp.data,
        Ok(Err(e)) => Err(write_error(e)),
        Err(_) => Err(FsError::Timeout("raft write not committed in time".into())),
    }
}

/// Takes what is queued (up to `MAX_BATCH`) as one log entry, with up to
/// `MAX_BATCHES_IN_FLIGHT` entries being committed at once; a lone command goes as itself.
async fn batcher(raft: Raft<TypeConfig>, mut queue: mpsc::Receiver<Submission>, timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if batch.len() == 1 {
                let (cmd, tx) = batch.pop().expect("one");
                let _ = tx.send(write_once(&raft, cmd, timeout).await);
                return;
            }
            let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
            let n = cmds.len();
            match write_once(&raft, Command::Batch(cmds), timeout).await {
                Ok(Output::Batch(results)) if results.len() == n => {
                    for (tx, r) in txs.into_iter().zip(results) {
                        let _ = tx.send(r);
                    }
                }
                Ok(other) => {
                    let e = FsError::Protocol(format!("a batch of {n} yielded {other:?}"));
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl RaftNode {
    /// Start the Raft of master `id` with its state in `data_dir` (created if needed). `peers`
    /// (every voting master, this one included, id → address) is used by [`Self::initialize`]
    /// on a fresh cluster only; a restarted node takes its membership from its log and
    /// snapshot. `client` dials the other masters (with the master role); `inbox` must be
    /// routed on the router this master serves.
    pub async fn start(
        id: NodeId,
        data_dir: &Path,
        peers: BTreeMap<NodeId, String>,
        client: RpcClient,
        inbox: &RaftInbox,
        config: RaftConfig,
    ) -> anyhow::Result<RaftNode> {
        let log = LogStore::open(data_dir)?;
        let sm = StateMachine::open(data_dir, config.initial_engine())?;
        let engine = sm.engine();
        let counters = sm.counters();
        let raft_config = Arc::new(config.openraft_config(id)?);
        let raft = Raft::new(id, raft_config, Network::new(client), log.clone(), sm).await?;
        inbox.set(Some(raft.clone()));
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let (submit, queue) = mpsc::channel(MAX_BATCH * MAX_BATCHES_IN_FLIGHT);
        tokio::spawn(batcher(raft.clone(), queue, request_timeout));
        Ok(RaftNode {
            id,
            raft,
            engine,
            inbox: inbox.clone(),
            peers,
            log,
            counters,
            request_timeout,
            submit,
            read_lease: Duration::from_millis(config.read_lease_ms),
            lease: Mutex::new(None),
            lease_reads: AtomicU64::new(0),
            confirmed_reads: AtomicU64::new(0),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle, for what this wrapper does not offer.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// First boot of a fresh cluster: make `peers` the voting members. Call it on one master
    /// (calling it on several with the same peers is harmless). A cluster that is already
    /// initialized answers `Ok` without change.
    pub async fn initialize(&self) -> Result<(), FsError> {
        use openraft::error::InitializeError;
        match self.raft.initialize(self.peers.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e)) => Err(FsError::InvalidArgument(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(FsError::Unavailable(format!("raft stopped: {e}"))),
        }
    }

    /// Replicate `cmd` and return the engine's result once it is committed and applied here.
    /// `NotLeader` (with the leader's address when known) on a follower; `Timeout` if it is not
    /// committed within the request timeout (e.g. a leader cut off in a minority): then it may
    /// or may not be applied later, and a retry with the same `OpId` is applied at most once.
    ///
    /// Concurrent writes are grouped into one log entry ([`Command::Batch`]) while earlier
    /// ones are being committed; each keeps its own result and its own exactly-once check.
    pub async fn write(&self, cmd: Command) -> Result<Output, FsError> {
        let (tx, rx) = oneshot::channel();
        self.submit
            .send((cmd, tx))
            .await
            .map_err(|_| FsError::Unavailable("raft stopped".into()))?;
        rx.await
            .map_err(|_| FsError::Unavailable("raft stopped".into()))?
    }

    /// Confirm that this node is still the leader (a quorum answers for its term) and that its
    /// state machine has applied everything committed before the call, then run `read` on the
    /// engine: a linearizable read. A confirmation round that misses its quorum (lost messages)
    /// is tried again until the request timeout; `NotLeader` at once on a follower.
    ///
    /// Within `read_lease_ms` of the start of a confirmation round that succeeded, while this
    /// node is still the leader of that round's term, the read needs no new round (see
    /// [`ReadLease`]).
    pub async fn read_linearizable<T>(
        &self,
        read: impl FnOnce(&Engine) -> T,
    ) -> Result<T, FsError> {
        if self.lease_valid(tokio::time::Instant::now()).await {
            self.lease_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(read(&self.engine.read().expect("poisoned")));
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // The round's heartbeats are sent after this instant, so the lease counts from it.
            let started = tokio::time::Instant::now();
            let term = if self.read_lease.is_zero() {
                None
            } else {
                self.leader_term().await
            };
            let err = match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => {
                    self.extend_lease(term, started).await;
                    self.confirmed_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(read(&self.engine.read().expect("poisoned")));
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    return Err(not_leader(f.leader_node))
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    FsError::Unavailable(format!("leadership not confirmed: {e}"))
                }
                Ok(Err(RaftError::Fatal(e))) => {
                    return Err(FsError::Unavailable(format!("raft stopped: {e}")))
                }
                Err(_) => return Err(FsError::Timeout("leadership not confirmed in time".into())),
            };
            if tokio::time::Instant::now() + READ_RETRY_PAUSE >= deadline {
                return Err(err);
            }
            tokio::time::sleep(READ_RETRY_PAUSE).await;
        }
    }

    /// The term this node leads, if it is the leader. Asked of openraft's core in line with the
    /// messages it handles (not from its metrics, which it publishes once per batch of
    /// messages): once a vote for a newer candidate was granted here, this says so, before any
    /// entry of that candidate's term can be acknowledged by this node.
    async fn leader_term(&self) -> Option<u64> {
        self.raft
            .with_raft_state(|st| {
                (st.server_state == ServerState::Leader).then(|| st.vote_ref().leader_id().term)
            })
            .await
            .ok()
            .flatten()
    }

    /// A confirmation round of `term` that began at `started` succeeded: reads may skip the
    /// round until `started + read_lease`, if this node still leads that term then. `term` is
    /// `None` with the lease off.
    async fn extend_lease(&self, term: Option<u64>, started: tokio::time::Instant) {
        let Some(term) = term else { return };
        if self.leader_term().await != Some(term) {
            return;
        }
        let until = started + self.read_lease;
        let mut lease = self.lease.lock().expect("poisoned");
        match lease.as_mut() {
            Some(l) if l.term == term && l.until >= until => {}
            _ => *lease = Some(ReadLease { term, until }),
        }
    }

    /// Whether a read at `now` may be served without a confirmation round: a lease covers
    /// `now` and this node's vote is still its own committed leadership of the lease's term.
    /// The vote is the log store's copy in memory, not openraft's core (which waits on each log
    /// append's fsync): openraft saves every change of vote — a vote granted to a candidate, a
    /// newer term seen — before it acts on it, and the copy changes once that save is durable,
    /// before any vote reply goes out.
    async fn lease_valid(&self, now: tokio::time::Instant) -> bool {
        let Some(lease) = *self.lease.lock().expect("poisoned") else {
            return false;
        };
        now < lease.until
            && self.log.vote().is_some_and(|v| {
                v.committed && v.leader_id.term == lease.term && v.leader_id.node_id == self.id
            })
    }

    /// The engine as applied on this node (possibly stale on a follower): for local reads
    /// that need no linearizability, and for tests.
    pub fn engine(&self) -> Arc<RwLock<Engine>> {
        self.engine.clone()
    }

    /// Role, term, indexes, leader and snapshot counters of this node.
    pub fn metrics(&self) -> RaftMetricsView {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            _ if m.running_state.is_err() => RaftRole::Shutdown,
            ServerState::Leader => RaftRole::Leader,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        };
        let membership = m.membership_config.membership();
        let voters: BTreeMap<NodeId, String> = membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).cloned().unwrap_or_default()))
            .collect();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).cloned());
        let applied_index = m.last_applied.map(|l| l.index).unwrap_or(0);
        RaftMetricsView {
            id: self.id,
            role,
            term: m.current_term,
            commit_index: self.log.committed_index().max(applied_index),
            applied_index,
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            leader_id: m.current_leader,
            leader_addr,
            voters,
            snapshots_built: self.counters.built.load(Ordering::Relaxed),
            snapshots_installed: self.counters.installed.load(Ordering::Relaxed),
            lease_reads: self.lease_reads.load(Ordering::Relaxed),
            confirmed_reads: self.confirmed_reads.load(Ordering::Relaxed),
        }
    }

    /// Add master `id` at `addr`: first as a learner (it catches up from the log or a
    /// snapshot), then as a voter. Call on the leader.
    pub async fn add_master(&self, id: NodeId, addr: String) -> Result<(), FsError> {
        let learner = self.raft.add_learner(id, addr, true);
        match tokio::time::timeout(self.request_timeout * 4, learner).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(write_error(e)),
            Err(_) => {
                return Err(FsError::Timeout(
                    "new master did not catch up in time".into(),
                ))
            }
        }
        self.change_voters(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    /// Remove master `id` from the voters (and from the cluster). Call on the leader; a leader
    /// removing itself steps down once the change is committed.
    pub async fn remove_master(&self, id: NodeId) -> Result<(), FsError> {
        self.change_voters(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
            .await
    }

    async fn change_voters(&self, change: ChangeMembers<NodeId, String>) -> Result<(), FsError> {
        let fut = self.raft.change_membership(change, false);
        match tokio::time::timeout(self.request_timeout * 2, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(FsError::Timeout(
                "membership change not committed in time".into(),
            )),
        }
    }

    /// Ask for a snapshot now (it is built in the background).
    pub async fn trigger_snapshot(&self) -> Result<(), FsError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| FsError::Unavailable(format!("raft stopped: {e}")))
    }

    /// Stop this node's Raft: the inbox answers `Unavailable` from now on. Returns once the
    /// log store's files are closed (the replication tasks that still read the log have ended; at
    /// most [`SHUTDOWN_WAIT`]), so that the same data directory can be opened again at once.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.inbox.set(None);
        self.raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.log.handles() > 1 {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("raft log store still in use {SHUTDOWN_WAIT:?} after shutdown");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log
            .flush_committed()
            .map_err(|e| anyhow::anyhow!("raft log store: saving the committed id: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_ranges_are_disjoint_with_a_gap() {
        let lab = RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_base_ms: 250,
            election_slot_ms: 160,
            election_jitter_ms: 30,
            read_lease_ms: 100,
            ..RaftConfig::default()
        };
        for config in [RaftConfig::default(), lab] {
            for a in 1..=ELECTION_SLOTS {
                for b in a + 1..=ELECTION_SLOTS {
                    let (a_min, a_max) = config.election_timeout_range(a);
                    let (b_min, _) = config.election_timeout_range(b);
                    assert!(
                        a_max + config.min_election_gap_ms() <= b_min,
                        "{a} {b}: {config:?}"
                    );
                    assert!(a_min > config.heartbeat_interval_ms);
                }
            }
            assert_eq!(
                config.election_timeout_range(1),
                config.election_timeout_range(9)
            );
            for id in 1..=3 {
                config.openraft_config(id).unwrap();
            }
        }
        assert_eq!(RaftConfig::default().election_timeout_range(1), (400, 420));
        assert_eq!(RaftConfig::default().election_timeout_range(3), (820, 840));
        let bad = RaftConfig {
            election_jitter_ms: 100,
            ..RaftConfig::default()
        };
        assert!(bad.openraft_config(1).is_err());
        // A read lease longer than half the shortest election timeout is refused.
        let bad = RaftConfig {
            read_lease_ms: 201,
            ..RaftConfig::default()
        };
        assert!(bad.openraft_config(1).is_err());
        let bad = RaftConfig {
            snapshot_chunk_bytes: 8 << 20,
            ..RaftConfig::default()
        };
        assert!(bad.openraft_config(1).is_err());
    }
}
