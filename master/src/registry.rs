//! Volatile cluster state kept next to the replicated engine: live chunkservers (from heartbeats),
//! chunk locations (rebuilt from chunk reports, never persisted), leases, replicas marked stale or
//! corrupt and their delete orders, and placement.
//!
//! Sans-IO: every method takes `now`; nothing here touches a socket, a disk or a clock.

use quarry_proto::master::{ChunkserverStatus, Heartbeat, HeartbeatReply};
use quarry_proto::{ChunkHandle, ChunkVersion, NodeId, ServerRef};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Buckets of used capacity (per mille) within which placement treats servers as equally full.
const FULLNESS_BUCKET_PERMILLE: u64 = 50;

/// How long a location set by a grant is protected from older chunk reports.
pub const REPORT_RACE: Duration = Duration::from_secs(10);

/// What a heartbeat yields: the reply, and versions newer than the table that the master must
/// adopt (through its log).
#[derive(Debug, Default)]
pub struct Report {
    pub reply: HeartbeatReply,
    pub adopt: Vec<(ChunkHandle, ChunkVersion)>,
}
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Server {
    pub id: NodeId,
    pub addr: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    pub last_heartbeat: Instant,
    pub active_requests: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// How far the delete order of a marked (stale or corrupt) replica has gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// None yet (a corrupt replica waits until a good one exists).
    #[default]
    None,
    /// Waiting for the server's next heartbeat reply.
    Queued,
    /// Sent in a heartbeat reply. A full report listed after that reply was received, which no
    /// longer lists the chunk, proves the replica gone: the mark is then dropped, and the server
    /// may receive a fresh copy.
    Delivered,
}

/// A replica that must never become a location again while it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub kind: MarkKind,
    pub order: Order,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    /// Missed a bump (or took one the master did not log): at or below this version it is stale,
    /// whatever it reports, until a later bump or a clone includes it.
    Stale(ChunkVersion),
    /// Failed a checksum.
    Corrupt,
}

/// A primary's right to order mutations of one chunk at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub primary: NodeId,
    pub version: ChunkVersion,
    /// The replicas the grant was made with (primary first).
    pub replicas: Vec<NodeId>,
    /// Computed from the moment the master sent the grant, so it never ends later than the
    /// primary's own view of it.
    pub expires: Instant,
}

pub struct Registry {
    servers: BTreeMap<NodeId, Server>,
    locations: HashMap<ChunkHandle, BTreeSet<NodeId>>,
    leases: HashMap<ChunkHandle, Lease>,
    pending_deletes: HashMap<NodeId, Vec<(ChunkHandle, ChunkVersion)>>,
    /// Replicas marked stale or corrupt, by chunk. A corrupt one is never offered to readers
    /// again; a stale one is deleted whenever it reports at or below its mark.
    marks: HashMap<ChunkHandle, BTreeMap<NodeId, Mark>>,
    /// Replicas reported at an older version than the table's in each server's last full
    /// report (for `FileInfo`).
    reported_stale: HashMap<NodeId, HashMap<ChunkHandle, ChunkVersion>>,
    /// Locations set by a grant in the last [`REPORT_RACE`]: a full report that a chunkserver
    /// listed before the grant reached it must not remove them.
    recent: HashMap<(ChunkHandle, NodeId), Instant>,
    corrupt_reports: u64,
    dead_after: Duration,
    /// After a master restart no lease is granted on a chunk that existed before it (handle at
    /// most `grace_handles_up_to`) until every lease granted before the restart has expired.
    no_grants_before: Instant,
    grace_handles_up_to: ChunkHandle,
    /// Free space a server must have left to receive a new chunk or replica (a chunk can grow
    /// to the chunk size once placed).
    reserve_bytes: u64,
}

/// What the registry needs to know about the replicated chunk table.
pub trait ChunkTable {
    fn version_of(&self, handle: ChunkHandle) -> Option<ChunkVersion>;
}

impl<F: Fn(ChunkHandle) -> Option<ChunkVersion>> ChunkTable for F {
    fn version_of(&self, handle: ChunkHandle) -> Option<ChunkVersion> {
        self(handle)
    }
}

impl Registry {
    /// `no_grants_before` applies to chunks with handles up to `grace_handles_up_to` (those that
    /// existed when the master started; handles are never reused).
    pub fn new(
        dead_after: Duration,
        no_grants_before: Instant,
        grace_handles_up_to: ChunkHandle,
    ) -> Registry {
        Registry {
            servers: BTreeMap::new(),
            locations: HashMap::new(),
            leases: HashMap::new(),
            pending_deletes: HashMap::new(),
            marks: HashMap::new(),
            reported_stale: HashMap::new(),
            recent: HashMap::new(),
            corrupt_reports: 0,
            dead_after,
            no_grants_before,
            grace_handles_up_to,
            reserve_bytes: 0,
        }
    }

    /// Servers with less than `bytes` free receive no new chunk or replica.
    pub fn set_reserve(&mut self, bytes: u64) {
        self.reserve_bytes = bytes;
    }

    /// Whether `s` has room for a new replica of up to `len` bytes (and the reserve).
    fn room(&self, s: &Server, len: u64) -> bool {
        s.capacity_bytes == 0
            || s.used_bytes.saturating_add(len.max(self.reserve_bytes)) < s.capacity_bytes
    }

    /// Whether server `id` has room for a new replica of up to `len` bytes (and the reserve).
    pub fn has_room(&self, id: NodeId, len: u64) -> bool {
        self.servers.get(&id).is_some_and(|s| self.room(s, len))
    }

    /// The live servers, by id.
    pub fn live_servers(&self, now: Instant) -> Vec<NodeId> {
        self.servers
            .keys()
            .copied()
            .filter(|&n| self.is_alive(n, now))
            .collect()
    }

    pub fn is_alive(&self, id: NodeId, now: Instant) -> bool {
        self.servers
            .get(&id)
            .is_some_and(|s| now.saturating_duration_since(s.last_heartbeat) < self.dead_after)
    }

    pub fn server(&self, id: NodeId) -> Option<&Server> {
        self.servers.get(&id)
    }

    pub fn server_ref(&self, id: NodeId) -> Option<ServerRef> {
        self.servers.get(&id).map(|s| ServerRef {
            id,
            addr: s.addr.clone(),
        })
    }

    /// Record a heartbeat. A full chunk report replaces what is known of this server's chunks:
    /// replicas at the current version become locations; older (stale) and unknown ones are
    /// scheduled for deletion.
    pub fn heartbeat(&mut self, hb: &Heartbeat, table: &impl ChunkTable, now: Instant) -> Report {
        let known = self.servers.contains_key(&hb.node);
        let server = self.servers.entry(hb.node).or_insert_with(|| Server {
            id: hb.node,
            addr: hb.addr.clone(),
            capacity_bytes: 0,
            used_bytes: 0,
            chunks: 0,
            last_heartbeat: now,
            active_requests: 0,
            bytes_read: 0,
            bytes_written: 0,
        });
        server.addr = hb.addr.clone();
        server.capacity_bytes = hb.capacity_bytes;
        server.used_bytes = hb.used_bytes;
        server.last_heartbeat = now;
        server.active_requests = hb.active_requests;
        server.bytes_read = hb.bytes_read;
        server.bytes_written = hb.bytes_written;
        // Marked replicas whose delete order went out in an earlier reply: a full report listed
        // after it (heartbeats of one server are sequential) shows whether they are gone.
        let delivered_before: Vec<ChunkHandle> = self
            .marks
            .iter()
            .filter(|(_, m)| {
                m.get(&hb.node)
                    .is_some_and(|mark| mark.order == Order::Delivered)
            })
            .map(|(h, _)| *h)
            .collect();
        let delete = self.pending_deletes.remove(&hb.node).unwrap_or_default();
        let mut marked_orders = false;
        for (handle, _) in &delete {
            if let Some(mark) = self.marks.get_mut(handle).and_then(|m| m.get_mut(&hb.node)) {
                mark.order = Order::Delivered;
                marked_orders = true;
            }
        }
        let mut out = Report {
            reply: HeartbeatReply {
                delete,
                // Deletes of marked replicas: the next full report confirms them, so the server
                // can take a fresh copy soon after.
                want_report: marked_orders,
            },
            adopt: Vec::new(),
        };
        match &hb.chunks {
            None => out.reply.want_report |= !known,
            Some(report) => {
                let server = self.servers.get_mut(&hb.node).expect("inserted above");
                server.chunks = report.len() as u64;
                let listed: HashSet<ChunkHandle> = report.iter().map(|(h, _)| *h).collect();
                for handle in delivered_before {
                    if !listed.contains(&handle) {
                        self.unmark(handle, hb.node);
                    }
                }
                let stale_here = self.reported_stale.entry(hb.node).or_default();
                stale_here.clear();
                self.recent
                    .retain(|_, at| now.saturating_duration_since(*at) < REPORT_RACE);
                for (handle, set) in self.locations.iter_mut() {
                    if !self.recent.contains_key(&(*handle, hb.node)) {
                        set.remove(&hb.node);
                    }
                }
                // Forget locations of chunks the namespace dropped.
                self.locations
                    .retain(|h, set| !set.is_empty() && table.version_of(*h).is_some());
                for &(handle, version) in report {
                    let Some(current) = table.version_of(handle) else {
                        // No longer in any file.
                        out.reply.delete.push((handle, version));
                        continue;
                    };
                    if version < current {
                        self.reported_stale
                            .entry(hb.node)
                            .or_default()
                            .insert(handle, version);
                    }
                    let mark = self
                        .marks
                        .get_mut(&handle)
                        .and_then(|m| m.get_mut(&hb.node));
                    match mark {
                        Some(Mark {
                            kind: MarkKind::Corrupt,
                            order,
                        }) => {
                            // Failed its checksum: never a location again. Still here after
                            // its delete order went out: order it again.
                            if *order == Order::Delivered {
                                *order = Order::None;
                            }
                            continue;
                        }
                        Some(Mark {
                            kind: MarkKind::Stale(at),
                            order,
                        }) if version <= *at => {
                            *order = Order::Delivered;
                            out.reply.delete.push((handle, version));
                            out.reply.want_report = true;
                            continue;
                        }
                        _ => {}
                    }
                    if version >= current {
                        // Newer than the table: a bump reached the replicas before the master
                        // logged it (then crashed or timed out). The replicas are right.
                        if version > current {
                            out.adopt.push((handle, version));
                        }
                        self.locations.entry(handle).or_default().insert(hb.node);
                    } else if self
                        .locations
                        .get(&handle)
                        .is_some_and(|set| set.iter().any(|n| *n != hb.node))
                    {
                        // Stale (missed a bump while away) and a current replica exists.
                        out.reply.delete.push((handle, version));
                    } else {
                        // Stale, but no current replica is known: keep it rather than lose the
                        // last copy; it is not served (reads carry the current version).
                        tracing::warn!(%handle, node = %hb.node, have = %version, want = %current,
                            "only stale replicas of this chunk are known; keeping them");
                    }
                }
            }
        }
        out
    }

    /// The replicas at the current version are exactly `nodes` (after a version bump).
    pub fn set_locations(
        &mut self,
        handle: ChunkHandle,
        nodes: impl IntoIterator<Item = NodeId>,
        now: Instant,
    ) {
        let set: BTreeSet<NodeId> = nodes.into_iter().collect();
        for n in &set {
            self.unmark_stale(handle, *n);
            self.recent.insert((handle, *n), now);
            if !self.locations.get(&handle).is_some_and(|s| s.contains(n)) {
                if let Some(s) = self.servers.get_mut(n) {
                    s.chunks += 1;
                }
            }
        }
        self.locations.insert(handle, set);
    }

    /// `node` may hold `handle` at a version no newer than `version` but missed the bump to it:
    /// it is stale; have it deleted (a current replica exists elsewhere).
    pub fn mark_stale(&mut self, handle: ChunkHandle, node: NodeId, version: ChunkVersion) {
        self.remove_location(handle, node);
        let marks = self.marks.entry(handle).or_default();
        if marks
            .get(&node)
            .is_some_and(|m| m.kind == MarkKind::Corrupt)
        {
            // Corrupt stays corrupt; the stale order below deletes it just as well.
        } else {
            marks.insert(
                node,
                Mark {
                    kind: MarkKind::Stale(version),
                    order: Order::Queued,
                },
            );
        }
        self.pending_deletes
            .entry(node)
            .or_default()
            .push((handle, version));
    }

    fn unmark(&mut self, handle: ChunkHandle, node: NodeId) {
        if let Some(m) = self.marks.get_mut(&handle) {
            m.remove(&node);
            if m.is_empty() {
                self.marks.remove(&handle);
            }
        }
    }

    fn unmark_stale(&mut self, handle: ChunkHandle, node: NodeId) {
        if self
            .mark(handle, node)
            .is_some_and(|m| matches!(m.kind, MarkKind::Stale(_)))
        {
            self.unmark(handle, node);
        }
    }

    pub fn mark(&self, handle: ChunkHandle, node: NodeId) -> Option<Mark> {
        self.marks.get(&handle)?.get(&node).copied()
    }

    /// The marked replicas of a chunk.
    pub fn marks_of(&self, handle: ChunkHandle) -> impl Iterator<Item = (NodeId, Mark)> + '_ {
        self.marks
            .get(&handle)
            .into_iter()
            .flat_map(|m| m.iter().map(|(n, mark)| (*n, *mark)))
    }

    /// Drop the delete orders for `node`'s copy of `handle` that are still waiting for a
    /// heartbeat (a clone is about to replace that copy).
    pub fn cancel_deletes(&mut self, handle: ChunkHandle, node: NodeId) {
        if let Some(orders) = self.pending_deletes.get_mut(&node) {
            orders.retain(|(h, _)| *h != handle);
        }
    }

    /// Corrupt replicas by chunk.
    pub fn corrupt_counts(&self) -> HashMap<ChunkHandle, u32> {
        self.marks
            .iter()
            .filter_map(|(h, m)| {
                let n = m.values().filter(|x| x.kind == MarkKind::Corrupt).count() as u32;
                (n > 0).then_some((*h, n))
            })
            .collect()
    }

    /// Have `node` delete its copy of `handle` (at most `version`), which is no location (any
    /// more): a corrupt replica once a good one exists, an extra replica, or a clone the master
    /// did not keep.
    pub fn order_delete(&mut self, handle: ChunkHandle, node: NodeId, version: ChunkVersion) {
        if let Some(mark) = self.marks.get_mut(&handle).and_then(|m| m.get_mut(&node)) {
            mark.order = Order::Queued;
        }
        if self
            .locations
            .get(&handle)
            .is_some_and(|s| s.contains(&node))
        {
            self.remove_location(handle, node);
            if let Some(s) = self.servers.get_mut(&node) {
                s.chunks = s.chunks.saturating_sub(1);
            }
        }
        self.pending_deletes
            .entry(node)
            .or_default()
            .push((handle, version));
    }

    /// A clone to `node` completed at the chunk's current version: a location, clear of any
    /// stale mark, protected like a grant's locations from reports listed before it.
    pub fn add_cloned(&mut self, handle: ChunkHandle, node: NodeId, now: Instant) {
        self.unmark_stale(handle, node);
        self.recent.insert((handle, node), now);
        self.reported_stale
            .get_mut(&node)
            .map(|m| m.remove(&handle));
        if !self
            .locations
            .get(&handle)
            .is_some_and(|s| s.contains(&node))
        {
            self.add_location(handle, node);
        }
    }

    /// The version `node` last reported for `handle`, if older than the table's.
    pub fn reported_stale(&self, handle: ChunkHandle) -> Vec<(NodeId, ChunkVersion)> {
        self.reported_stale
            .iter()
            .filter_map(|(n, m)| m.get(&handle).map(|v| (*n, *v)))
            .collect()
    }

    /// A replica that acknowledged a version bump (or was created) holds the current version.
    pub fn add_location(&mut self, handle: ChunkHandle, node: NodeId) {
        self.locations.entry(handle).or_default().insert(node);
        if let Some(s) = self.servers.get_mut(&node) {
            s.chunks += 1;
        }
    }

    /// A replica missed a version bump or failed its checksum: it is no longer a location.
    pub fn remove_location(&mut self, handle: ChunkHandle, node: NodeId) {
        if let Some(set) = self.locations.get_mut(&handle) {
            set.remove(&node);
        }
    }

    /// A replica failed its checksum: withdrawn at once; deleted once a good replica exists
    /// (decided by the repair loop). Counted once per replica.
    pub fn report_corrupt(&mut self, handle: ChunkHandle, node: NodeId) {
        let marks = self.marks.entry(handle).or_default();
        if marks.get(&node).is_none_or(|m| m.kind != MarkKind::Corrupt) {
            self.corrupt_reports += 1;
            marks.insert(
                node,
                Mark {
                    kind: MarkKind::Corrupt,
                    order: Order::None,
                },
            );
        }
        self.remove_location(handle, node);
    }

    pub fn corrupt_reports(&self) -> u64 {
        self.corrupt_reports
    }

    /// The chunk no longer exists in the namespace: forget it, and have its holders delete it.
    pub fn forget_chunk(&mut self, handle: ChunkHandle) {
        self.leases.remove(&handle);
        self.marks.remove(&handle);
        self.recent.retain(|(h, _), _| *h != handle);
        for m in self.reported_stale.values_mut() {
            m.remove(&handle);
        }
        if let Some(set) = self.locations.remove(&handle) {
            for node in set {
                self.pending_deletes
                    .entry(node)
                    .or_default()
                    .push((handle, ChunkVersion(u64::MAX)));
            }
        }
    }

    /// Every location, live or not (the current-version holders the master knows of).
    pub fn locations(&self, handle: ChunkHandle) -> Vec<NodeId> {
        self.locations
            .get(&handle)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn live_replicas(&self, handle: ChunkHandle, now: Instant) -> Vec<ServerRef> {
        self.locations(handle)
            .into_iter()
            .filter(|&n| self.is_alive(n, now))
            .filter_map(|n| self.server_ref(n))
            .collect()
    }

    /// The live locations of a chunk (its live current replicas).
    pub fn live_locations(&self, handle: ChunkHandle, now: Instant) -> Vec<NodeId> {
        self.locations
            .get(&handle)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|&n| self.is_alive(n, now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How full a server is, for placement: its bucket of used capacity, then its chunk count.
    pub fn fullness(&self, id: NodeId) -> (u64, u64) {
        self.servers.get(&id).map_or((u64::MAX, u64::MAX), |s| {
            let used_permille = if s.capacity_bytes == 0 {
                0
            } else {
                (s.used_bytes as u128 * 1000 / s.capacity_bytes as u128) as u64
            };
            (used_permille / FULLNESS_BUCKET_PERMILLE, s.chunks)
        })
    }

    /// A live server, not full, to receive a new replica of `handle`: not a location of it, not
    /// marked stale or corrupt for it, not refused by `skip`; the least used (see `place`).
    pub fn place_replica(
        &self,
        handle: ChunkHandle,
        len: u64,
        now: Instant,
        skip: impl Fn(NodeId) -> bool,
    ) -> Option<ServerRef> {
        let holders = self.locations.get(&handle);
        self.servers
            .values()
            .filter(|s| self.is_alive(s.id, now))
            .filter(|s| self.room(s, len))
            .filter(|s| !holders.is_some_and(|h| h.contains(&s.id)))
            .filter(|s| self.mark(handle, s.id).is_none())
            .filter(|s| !skip(s.id))
            .min_by_key(|s| {
                let (bucket, chunks) = self.fullness(s.id);
                (
                    bucket,
                    chunks,
                    (s.id.0 ^ handle.0).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            })
            .map(|s| ServerRef {
                id: s.id,
                addr: s.addr.clone(),
            })
    }

    /// Choose up to `count` distinct live servers for a new chunk, emptiest first (by fraction of
    /// capacity used, then by chunk count; `salt` breaks remaining ties so load spreads).
    pub fn place(&self, count: usize, now: Instant, salt: u64) -> Vec<ServerRef> {
        let mut live: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| self.is_alive(s.id, now))
            .filter(|s| self.room(s, 0))
            .collect();
        live.sort_by_key(|s| {
            let (bucket, chunks) = self.fullness(s.id);
            (
                bucket,
                chunks,
                (s.id.0 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )
        });
        live.into_iter()
            .take(count)
            .map(|s| ServerRef {
                id: s.id,
                addr: s.addr.clone(),
            })
            .collect()
    }

    pub fn lease(&self, handle: ChunkHandle) -> Option<&Lease> {
        self.leases.get(&handle)
    }

    /// Whether a lease for this chunk may still be valid somewhere (then no other may be granted).
    pub fn lease_may_be_valid(&self, handle: ChunkHandle, now: Instant) -> Option<Duration> {
        if now < self.no_grants_before && handle <= self.grace_handles_up_to {
            return Some(self.no_grants_before - now);
        }
        self.leases
            .get(&handle)
            .filter(|l| l.expires > now)
            .map(|l| l.expires - now)
    }

    pub fn set_lease(&mut self, handle: ChunkHandle, lease: Lease) {
        self.leases.insert(handle, lease);
    }

    /// A primary reported that a mutation of `handle` at `version` failed on `failed` while it
    /// succeeded elsewhere: those replicas may differ from the rest, so they stop being
    /// locations and are deleted (marked stale at `version`, which no later bump reaches).
    /// The lease is dropped when its primary released it; otherwise it stays, but
    /// [`Registry::lease_intact`] turns false so the next grant bumps the version without them.
    pub fn withdraw(
        &mut self,
        handle: ChunkHandle,
        version: ChunkVersion,
        failed: &[NodeId],
        lease_released: bool,
    ) {
        for &n in failed {
            self.mark_stale(handle, n, version);
        }
        if lease_released {
            if let Some(l) = self.leases.get(&handle) {
                if l.version == version && failed.contains(&l.primary) {
                    self.leases.remove(&handle);
                }
            }
        }
    }

    /// Whether every replica of the lease on `handle` is still a location (none was withdrawn).
    pub fn lease_intact(&self, handle: ChunkHandle) -> bool {
        let Some(l) = self.leases.get(&handle) else {
            return false;
        };
        let set = self.locations.get(&handle);
        l.replicas
            .iter()
            .all(|n| set.is_some_and(|s| s.contains(n)))
    }

    pub fn drop_lease(&mut self, handle: ChunkHandle) {
        self.leases.remove(&handle);
    }

    pub fn status(&self, now: Instant) -> Vec<ChunkserverStatus> {
        self.servers
            .values()
            .map(|s| ChunkserverStatus {
                id: s.id,
                addr: s.addr.clone(),
                alive: self.is_alive(s.id, now),
                capacity_bytes: s.capacity_bytes,
                used_bytes: s.used_bytes,
                chunks: s.chunks,
                last_heartbeat_ms_ago: now.saturating_duration_since(s.last_heartbeat).as_millis()
                    as u64,
                active_requests: s.active_requests,
                bytes_read: s.bytes_read,
                bytes_written: s.bytes_written,
            })
            .collect()
    }

    /// (capacity, used) over live servers.
    pub fn space(&self, now: Instant) -> (u64, u64) {
        self.servers
            .values()
            .filter(|s| self.is_alive(s.id, now))
            .fold((0, 0), |(c, u), s| (c + s.capacity_bytes, u + s.used_bytes))
    }

    pub fn live_count(&self, now: Instant) -> usize {
        self.servers
            .keys()
            .filter(|&&id| self.is_alive(id, now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: u64, chunks: Option<Vec<(u64, u64)>>) -> Heartbeat {
        Heartbeat {
            node: NodeId(node),
            addr: format!("127.0.0.1:{}", 7000 + node),
            capacity_bytes: 1000,
            used_bytes: node * 10,
            chunks: chunks.map(|c| {
                c.into_iter()
                    .map(|(h, v)| (ChunkHandle(h), ChunkVersion(v)))
                    .collect()
            }),
            active_requests: 0,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    fn table(h: ChunkHandle) -> Option<ChunkVersion> {
        match h.0 {
            1 => Some(ChunkVersion(3)),
            2 => Some(ChunkVersion(1)),
            _ => None,
        }
    }

    #[test]
    fn report_keeps_current_and_deletes_stale_and_unknown() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        let reply = r
            .heartbeat(&hb(1, Some(vec![(1, 3), (2, 1), (9, 1)])), &table, t0)
            .reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(9), ChunkVersion(1))]);
        let reply = r.heartbeat(&hb(2, Some(vec![(1, 2)])), &table, t0).reply;
        assert_eq!(
            reply.delete,
            vec![(ChunkHandle(1), ChunkVersion(2))],
            "older version is stale"
        );
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(1)]);
        assert_eq!(r.live_replicas(ChunkHandle(2), t0).len(), 1);
    }

    #[test]
    fn the_last_copies_are_kept_even_when_stale() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        // Chunk 1 is at version 3 in the table, but every replica says 2.
        for n in 1..=3 {
            let reply = r.heartbeat(&hb(n, Some(vec![(1, 2)])), &table, t0).reply;
            assert!(reply.delete.is_empty(), "server {n} must keep its copy");
        }
        assert!(r.live_replicas(ChunkHandle(1), t0).is_empty());
    }

    #[test]
    fn newer_versions_are_adopted_and_served() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        let out = r.heartbeat(&hb(1, Some(vec![(1, 4)])), &table, t0);
        assert_eq!(out.adopt, vec![(ChunkHandle(1), ChunkVersion(4))]);
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(1)]);
    }

    #[test]
    fn corrupt_replicas_do_not_come_back_with_a_report() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        r.heartbeat(&hb(1, Some(vec![(1, 3)])), &table, t0);
        r.heartbeat(&hb(2, Some(vec![(1, 3)])), &table, t0);
        r.report_corrupt(ChunkHandle(1), NodeId(1));
        r.heartbeat(&hb(1, Some(vec![(1, 3)])), &table, t0);
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(2)]);
    }

    #[test]
    fn a_replica_that_missed_a_bump_is_deleted_up_to_that_version() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        r.heartbeat(&hb(1, Some(vec![(1, 3)])), &table, t0);
        r.heartbeat(&hb(2, Some(vec![(1, 3)])), &table, t0);
        r.set_locations(ChunkHandle(1), [NodeId(1)], t0);
        r.mark_stale(ChunkHandle(1), NodeId(2), ChunkVersion(3));
        let reply = r.heartbeat(&hb(2, None), &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(1), ChunkVersion(3))]);
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(1)]);
        // Its report, even at the current version, does not bring it back.
        let reply = r.heartbeat(&hb(2, Some(vec![(1, 3)])), &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(1), ChunkVersion(3))]);
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(1)]);
        // A later bump that includes it clears the mark.
        r.set_locations(ChunkHandle(1), [NodeId(1), NodeId(2)], t0);
        r.heartbeat(&hb(2, Some(vec![(1, 3)])), &table, t0);
        assert_eq!(r.locations(ChunkHandle(1)), vec![NodeId(1), NodeId(2)]);
    }

    #[test]
    fn a_report_listed_before_a_grant_does_not_undo_it() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(60), t0, ChunkHandle(0));
        r.heartbeat(&hb(1, Some(vec![])), &table, t0);
        // The grant created chunk 2 on server 1; then a report taken before it arrives.
        r.set_locations(ChunkHandle(2), [NodeId(1)], t0);
        r.heartbeat(&hb(1, Some(vec![])), &table, t0 + Duration::from_secs(1));
        assert_eq!(r.locations(ChunkHandle(2)), vec![NodeId(1)]);
        // Long after the grant, a report without the chunk does remove it.
        r.heartbeat(
            &hb(1, Some(vec![])),
            &table,
            t0 + REPORT_RACE + Duration::from_secs(1),
        );
        assert!(r.locations(ChunkHandle(2)).is_empty());
    }

    #[test]
    fn unknown_server_without_report_is_asked_for_one() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        assert!(r.heartbeat(&hb(1, None), &table, t0).reply.want_report);
        assert!(!r.heartbeat(&hb(1, None), &table, t0).reply.want_report);
    }

    #[test]
    fn silent_server_is_dead_and_not_served_or_placed() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        r.heartbeat(&hb(1, Some(vec![(1, 3)])), &table, t0);
        r.heartbeat(
            &hb(2, Some(vec![(1, 3)])),
            &table,
            t0 + Duration::from_secs(8),
        );
        let later = t0 + Duration::from_secs(11);
        assert!(!r.is_alive(NodeId(1), later));
        assert!(r.is_alive(NodeId(2), later));
        assert_eq!(r.live_replicas(ChunkHandle(1), later).len(), 1);
        assert_eq!(r.place(3, later, 0).len(), 1);
    }

    #[test]
    fn placement_is_distinct_and_prefers_empty_servers() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        for n in 1..=5 {
            r.heartbeat(&hb(n, Some(vec![])), &table, t0);
        }
        // server 5 is nearly full
        let mut full = hb(5, None);
        full.used_bytes = 990;
        r.heartbeat(&full, &table, t0);
        for salt in 0..50 {
            let p = r.place(3, t0, salt);
            let ids: BTreeSet<_> = p.iter().map(|s| s.id).collect();
            assert_eq!(ids.len(), 3);
            assert!(!ids.contains(&NodeId(5)));
        }
    }

    #[test]
    fn servers_short_of_the_reserve_get_no_new_chunk() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        for n in 1..=3 {
            r.heartbeat(&hb(n, Some(vec![])), &table, t0);
        }
        r.set_reserve(985);
        // Servers use 10, 20, 30 of 1000: only server 1 keeps 985 free.
        let ids: Vec<NodeId> = r.place(3, t0, 0).iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![NodeId(1)]);
        assert!(r.has_room(NodeId(1), 0) && !r.has_room(NodeId(2), 0));
        assert!(
            !r.has_room(NodeId(1), 991),
            "a replica bigger than the room left"
        );
        assert_eq!(
            r.place_replica(ChunkHandle(1), 0, t0, |_| false)
                .map(|s| s.id),
            Some(NodeId(1))
        );
    }

    #[test]
    fn withdrawn_replicas_stop_being_locations_and_break_the_lease() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        for n in 1..=3 {
            r.heartbeat(&hb(n, Some(vec![(1, 3)])), &table, t0);
        }
        let h = ChunkHandle(1);
        let lease = Lease {
            primary: NodeId(1),
            version: ChunkVersion(3),
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            expires: t0 + Duration::from_secs(60),
        };
        r.set_lease(h, lease.clone());
        assert!(r.lease_intact(h));
        // A secondary failed a mutation: withdrawn, deleted at its next heartbeat, and the
        // lease is kept (its primary goes on without it) but no longer intact.
        r.withdraw(h, ChunkVersion(3), &[NodeId(3)], false);
        assert_eq!(r.locations(h), vec![NodeId(1), NodeId(2)]);
        assert!(!r.lease_intact(h));
        assert!(r.lease_may_be_valid(h, t0).is_some());
        let mut reply = r.heartbeat(&hb(3, Some(vec![(1, 3)])), &table, t0).reply;
        reply.delete.dedup();
        assert_eq!(reply.delete, vec![(h, ChunkVersion(3))]);
        assert_eq!(
            r.locations(h),
            vec![NodeId(1), NodeId(2)],
            "not a location again"
        );
        // The primary failed itself and released its lease: a new one may be granted now.
        r.withdraw(h, ChunkVersion(3), &[NodeId(1)], true);
        assert!(r.lease_may_be_valid(h, t0).is_none());
        assert_eq!(r.locations(h), vec![NodeId(2)]);
        // A release for another version (a report about the past) leaves a newer lease alone.
        r.set_lease(
            h,
            Lease {
                version: ChunkVersion(4),
                ..lease
            },
        );
        r.withdraw(h, ChunkVersion(3), &[NodeId(1)], true);
        assert!(r.lease_may_be_valid(h, t0).is_some());
    }

    #[test]
    fn leases_block_grants_until_expiry_and_after_restart() {
        let t0 = Instant::now();
        let mut r = Registry::new(
            Duration::from_secs(10),
            t0 + Duration::from_secs(60),
            ChunkHandle(1),
        );
        assert!(
            r.lease_may_be_valid(ChunkHandle(2), t0).is_none(),
            "new chunks need no grace"
        );
        assert!(r.lease_may_be_valid(ChunkHandle(1), t0).is_some());
        let t1 = t0 + Duration::from_secs(61);
        assert!(r.lease_may_be_valid(ChunkHandle(1), t1).is_none());
        r.set_lease(
            ChunkHandle(1),
            Lease {
                primary: NodeId(1),
                version: ChunkVersion(4),
                replicas: vec![NodeId(1)],
                expires: t1 + Duration::from_secs(60),
            },
        );
        assert_eq!(
            r.lease_may_be_valid(ChunkHandle(1), t1),
            Some(Duration::from_secs(60))
        );
        assert!(r
            .lease_may_be_valid(ChunkHandle(1), t1 + Duration::from_secs(60))
            .is_none());
    }

    #[test]
    fn forgotten_chunks_are_deleted_through_heartbeats() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        r.heartbeat(&hb(1, Some(vec![(1, 3)])), &table, t0);
        r.forget_chunk(ChunkHandle(1));
        let reply = r.heartbeat(&hb(1, None), &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(1), ChunkVersion(u64::MAX))]);
        assert!(r.locations(ChunkHandle(1)).is_empty());
    }
}
