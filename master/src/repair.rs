//! Re-replication decisions: which chunks to clone where, which extra or corrupt replicas to
//! delete, and what to make of a clone's answer (`docs/recovery.md`).
//!
//! Sans-IO, like the registry it works on: every method takes `now`, and nothing here touches a
//! socket, a disk or a clock. The service calls [`Repair::scan`] every `repair_interval_ms`,
//! sends the [`CloneOrder`]s it returns as `CloneChunk` RPCs, and hands each answer to
//! [`Repair::finish`].

use crate::registry::{MarkKind, Order, Registry};
use quarry_proto::{ChunkHandle, ChunkVersion, FsError, NodeId, ServerRef};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RepairLimits {
    /// Clones in flight at once, cluster-wide.
    pub max_concurrent_clones: usize,
    /// Clones in flight at once from one source, and into one target.
    pub per_server: usize,
    /// A clone not answered by then is counted failed (its RPC has a shorter timeout; this only
    /// guards against an answer that never comes back to `finish`).
    pub give_up_after: Duration,
    /// Rebalancing: while nothing needs repair, replicas move (a clone, then a delete of the
    /// source's copy) from servers holding more than their share of the replicas by more than
    /// this many chunks to servers holding fewer than their share by as much; shares are
    /// proportional to capacity. 0 turns rebalancing off.
    pub balance_slack_chunks: u64,
}

/// Copy `handle` at `version` from `source` to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneOrder {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub source: ServerRef,
    pub target: ServerRef,
}

#[derive(Clone, Debug)]
struct InFlight {
    order: CloneOrder,
    deadline: Instant,
    /// A grant started on the chunk after this clone did: its copy must not become a location.
    spoiled: bool,
    /// A rebalancing move: once the copy is a location, the copy on this server is deleted.
    moved_from: Option<NodeId>,
}

/// Totals since the master started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Clones that completed and became locations, and the bytes they copied.
    pub done: u64,
    pub bytes: u64,
    /// Clones that failed, timed out, or completed but were discarded.
    pub failed: u64,
    /// Delete orders for extra replicas of over-replicated chunks, and for corrupt replicas.
    pub extra_deletes: u64,
    pub corrupt_deletes: u64,
    /// Rebalancing moves completed (their source copies ordered deleted).
    pub moves: u64,
}

/// What one scan decided.
#[derive(Debug, Default)]
pub struct Scan {
    pub clones: Vec<CloneOrder>,
    /// Chunks still short of their goal once the clones in flight are counted (the queue).
    pub queued: u64,
    /// Delete orders queued in the registry: (chunk, server).
    pub deletes: Vec<(ChunkHandle, NodeId)>,
    /// How many of `clones` are rebalancing moves.
    pub moves: usize,
}

/// Chunks remembered per server, per scan, as candidates for a rebalancing move.
const MOVE_CANDIDATES_PER_SERVER: usize = 32;

/// What became of a clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The target is a location now.
    Added,
    /// The chunk changed (or a grant started) meanwhile: the target was told to delete its copy.
    Discarded,
    Failed,
}

pub struct Repair {
    limits: RepairLimits,
    in_flight: Vec<InFlight>,
    /// Chunks with a grant in progress (counted, since grants of one chunk may overlap in
    /// principle): no clone starts on them, and clones already running are spoiled.
    granting: HashMap<ChunkHandle, u32>,
    stats: RepairStats,
    queued: u64,
}

impl Repair {
    pub fn new(limits: RepairLimits) -> Repair {
        Repair {
            limits,
            in_flight: Vec::new(),
            granting: HashMap::new(),
            stats: RepairStats::default(),
            queued: 0,
        }
    }

    pub fn stats(&self) -> RepairStats {
        self.stats
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn in_flight_for(&self, handle: ChunkHandle) -> usize {
        self.in_flight
            .iter()
            .filter(|f| f.order.handle == handle)
            .count()
    }

    /// The queue length found by the last scan.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// A lease grant on `handle` begins (before its version bump): clones running on the chunk
    /// will not count, and none starts until [`Repair::grant_ended`].
    pub fn grant_started(&mut self, handle: ChunkHandle) {
        *self.granting.entry(handle).or_insert(0) += 1;
        for f in self.in_flight.iter_mut() {
            if f.order.handle == handle {
                f.spoiled = true;
            }
        }
    }

    pub fn grant_ended(&mut self, handle: ChunkHandle) {
        if let Some(n) = self.granting.get_mut(&handle) {
            *n -= 1;
            if *n == 0 {
                self.granting.remove(&handle);
            }
        }
    }

    fn count_as(&self, node: NodeId, source: bool) -> usize {
        self.in_flight
            .iter()
            .filter(|f| {
                if source {
                    f.order.source.id == node
                } else {
                    f.order.target.id == node
                }
            })
            .count()
    }

    /// Look at every chunk once: `chunks` yields (handle, table version, goal). Returns the
    /// clones to start now, fewest live replicas first, within the limits; queues delete orders
    /// for extra replicas of over-replicated chunks and for corrupt replicas that a good replica
    /// can replace.
    ///
    /// Safety rules: no clone, and no delete of a replica the lease may use, while a lease may be
    /// valid on the chunk or a grant is in progress (the chunk's bytes can change only under a
    /// lease, and every grant bumps the version, so a chunk with no possible lease is immutable
    /// at its version); never a delete of the last live replica, or of the lease holder.
    pub fn scan(
        &mut self,
        registry: &mut Registry,
        chunks: impl IntoIterator<Item = (ChunkHandle, ChunkVersion, u32)>,
        now: Instant,
    ) -> Scan {
        let mut out = Scan::default();
        // Clones whose answer never came.
        let before = self.in_flight.len();
        self.in_flight.retain(|f| f.deadline > now);
        self.stats.failed += (before - self.in_flight.len()) as u64;

        // (live, handle, version, missing replicas)
        let mut needs: Vec<(usize, ChunkHandle, ChunkVersion, usize)> = Vec::new();
        // Versions of the chunks with marked replicas.
        let mut marked: HashMap<ChunkHandle, ChunkVersion> = HashMap::new();
        // For rebalancing: live replicas per server, and a few movable chunks on each.
        let mut held: HashMap<NodeId, u64> = HashMap::new();
        let mut movable: HashMap<NodeId, Vec<(ChunkHandle, ChunkVersion)>> = HashMap::new();
        for (handle, version, goal) in chunks {
            if registry.marks_of(handle).next().is_some() {
                marked.insert(handle, version);
            }
            // Version 1: never granted, so no replica holds data yet.
            if version.0 <= 1 {
                continue;
            }
            let goal = goal.max(1) as usize;
            let live = registry.live_locations(handle, now);
            if live.is_empty() {
                continue; // missing: nothing to copy from
            }
            let pending = self.in_flight_for(handle);
            for &n in &live {
                *held.entry(n).or_insert(0) += 1;
            }
            if self.limits.balance_slack_chunks > 0
                && live.len() == goal
                && pending == 0
                && !self.granting.contains_key(&handle)
                && registry.lease_may_be_valid(handle, now).is_none()
            {
                for &n in &live {
                    let list = movable.entry(n).or_default();
                    if list.len() < MOVE_CANDIDATES_PER_SERVER {
                        list.push((handle, version));
                    }
                }
            }
            if live.len() < goal {
                let short = goal - live.len();
                if short > pending {
                    needs.push((live.len(), handle, version, short - pending));
                }
            } else if live.len() > goal && pending == 0 && !self.granting.contains_key(&handle) {
                out.deletes
                    .extend(self.delete_extras(registry, handle, version, &live, goal, now));
            }
        }
        out.deletes
            .extend(self.delete_corrupt(registry, &marked, now));

        needs.sort_by_key(|&(live, handle, _, _)| (live, handle));
        for (_, handle, version, short) in needs {
            let blocked = self.granting.contains_key(&handle)
                || registry.lease_may_be_valid(handle, now).is_some();
            let mut started = 0;
            while !blocked
                && started < short
                && self.in_flight.len() < self.limits.max_concurrent_clones
            {
                let Some(order) = self.choose(registry, handle, version, now) else {
                    break;
                };
                // An older order to delete the target's copy would now race the clone, which
                // replaces that copy anyway.
                registry.cancel_deletes(handle, order.target.id);
                self.in_flight.push(InFlight {
                    order: order.clone(),
                    deadline: now + self.limits.give_up_after,
                    spoiled: false,
                    moved_from: None,
                });
                out.clones.push(order);
                started += 1;
            }
            if started < short {
                out.queued += 1;
            }
        }
        self.queued = out.queued;
        if out.queued == 0 && self.limits.balance_slack_chunks > 0 {
            let moves = self.balance(registry, &held, &movable, now);
            out.moves = moves.len();
            out.clones.extend(moves);
        }
        out
    }

    /// Rebalancing moves to start now (see [`RepairLimits::balance_slack_chunks`]): from the
    /// server most above its share to the one most below it, one chunk at a time, counting the
    /// moves in flight, within the clone limits. `held` counts each live server's replicas.
    fn balance(
        &mut self,
        registry: &Registry,
        held: &HashMap<NodeId, u64>,
        movable: &HashMap<NodeId, Vec<(ChunkHandle, ChunkVersion)>>,
        now: Instant,
    ) -> Vec<CloneOrder> {
        let slack = self.limits.balance_slack_chunks as f64;
        let servers: Vec<NodeId> = registry.live_servers(now);
        if servers.len() < 2 {
            return Vec::new();
        }
        let weight = |n: NodeId| -> f64 {
            // Capacity in GiB as the weight; servers that report none count as one.
            registry.server(n).map_or(1.0, |s| {
                (s.capacity_bytes as f64 / (1u64 << 30) as f64).max(1e-3)
            })
        };
        let total: f64 = servers
            .iter()
            .map(|&n| held.get(&n).copied().unwrap_or(0) as f64)
            .sum();
        let total_weight: f64 = servers.iter().map(|&n| weight(n)).sum();
        // Replicas above (+) or below (-) the server's share, moves in flight included.
        let mut excess: HashMap<NodeId, f64> = servers
            .iter()
            .map(|&n| {
                let share = total * weight(n) / total_weight;
                (n, held.get(&n).copied().unwrap_or(0) as f64 - share)
            })
            .collect();
        for f in &self.in_flight {
            if let Some(from) = f.moved_from {
                *excess.entry(from).or_insert(0.0) -= 1.0;
                *excess.entry(f.order.target.id).or_insert(0.0) += 1.0;
            }
        }
        let per = self.limits.per_server;
        let mut out = Vec::new();
        while self.in_flight.len() < self.limits.max_concurrent_clones {
            let pick = |want_donor: bool, excess: &HashMap<NodeId, f64>| {
                servers
                    .iter()
                    .copied()
                    .filter(|&n| self.count_as(n, want_donor) < per)
                    .filter(|&n| {
                        let e = excess.get(&n).copied().unwrap_or(0.0);
                        if want_donor {
                            e > slack
                        } else {
                            e < -slack && registry.has_room(n, 0)
                        }
                    })
                    .max_by(|&a, &b| {
                        let (ea, eb) = (excess[&a], excess[&b]);
                        let ord = if want_donor {
                            ea.total_cmp(&eb)
                        } else {
                            eb.total_cmp(&ea)
                        };
                        ord.then(b.cmp(&a))
                    })
            };
            let (Some(donor), Some(receiver)) = (pick(true, &excess), pick(false, &excess)) else {
                break;
            };
            let candidate = movable.get(&donor).and_then(|list| {
                list.iter().copied().find(|&(h, _)| {
                    self.in_flight_for(h) == 0
                        && !registry.live_locations(h, now).contains(&receiver)
                        && registry.mark(h, receiver).is_none()
                })
            });
            let (Some((handle, version)), Some(source), Some(target)) = (
                candidate,
                registry.server_ref(donor),
                registry.server_ref(receiver),
            ) else {
                // Nothing movable from the fullest server to the emptiest one this time.
                break;
            };
            tracing::info!(%handle, from = %donor, to = %receiver, "rebalancing: moving a replica");
            let order = CloneOrder {
                handle,
                version,
                source,
                target,
            };
            self.in_flight.push(InFlight {
                order: order.clone(),
                deadline: now + self.limits.give_up_after,
                spoiled: false,
                moved_from: Some(donor),
            });
            *excess.get_mut(&donor).expect("listed") -= 1.0;
            *excess.get_mut(&receiver).expect("listed") += 1.0;
            out.push(order);
        }
        out
    }

    /// A source (a live location with room, the least busy) and a target (placement) for one
    /// more clone of `handle`.
    fn choose(
        &self,
        registry: &Registry,
        handle: ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> Option<CloneOrder> {
        let per = self.limits.per_server;
        let source = registry
            .live_locations(handle, now)
            .into_iter()
            .filter(|&n| self.count_as(n, true) < per)
            .min_by_key(|&n| {
                (
                    self.count_as(n, true),
                    registry.server(n).map_or(u32::MAX, |s| s.active_requests),
                    (n.0 ^ handle.0).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            })
            .and_then(|n| registry.server_ref(n))?;
        let target = registry.place_replica(handle, 0, now, |n| {
            self.count_as(n, false) >= per
                || self
                    .in_flight
                    .iter()
                    .any(|f| f.order.handle == handle && f.order.target.id == n)
        })?;
        Some(CloneOrder {
            handle,
            version,
            source,
            target,
        })
    }

    /// Delete orders for the extra replicas of an over-replicated chunk: the fullest servers
    /// first, never the lease holder, and none of the lease's replicas while it may be valid.
    fn delete_extras(
        &mut self,
        registry: &mut Registry,
        handle: ChunkHandle,
        version: ChunkVersion,
        live: &[NodeId],
        goal: usize,
        now: Instant,
    ) -> Vec<(ChunkHandle, NodeId)> {
        let lease_valid = registry.lease_may_be_valid(handle, now).is_some();
        let lease = registry.lease(handle).cloned();
        if lease_valid && lease.is_none() {
            // After a restart: a primary the master does not know of may hold a lease.
            return Vec::new();
        }
        let mut candidates: Vec<NodeId> = live
            .iter()
            .copied()
            .filter(|n| match &lease {
                Some(l) if lease_valid => !l.replicas.contains(n),
                Some(l) => l.primary != *n,
                None => true,
            })
            .collect();
        // Fullest first.
        candidates.sort_by_key(|&n| {
            let (bucket, chunks) = registry.fullness(n);
            (std::cmp::Reverse((bucket, chunks)), n)
        });
        let extra = live.len() - goal;
        let mut out = Vec::new();
        for n in candidates.into_iter().take(extra) {
            tracing::info!(%handle, node = %n, "over-replicated: deleting an extra replica");
            registry.order_delete(handle, n, version);
            self.stats.extra_deletes += 1;
            out.push((handle, n));
        }
        out
    }

    /// Delete orders for corrupt replicas, once a good live replica exists (a corrupt copy is
    /// useless as a source, but the last copies are kept for an operator), and not while a lease
    /// that may be valid still includes them (the primary would fail every write on them).
    fn delete_corrupt(
        &mut self,
        registry: &mut Registry,
        versions: &HashMap<ChunkHandle, ChunkVersion>,
        now: Instant,
    ) -> Vec<(ChunkHandle, NodeId)> {
        let mut out = Vec::new();
        for (&handle, &version) in versions {
            let waiting: Vec<NodeId> = registry
                .marks_of(handle)
                .filter(|(_, m)| m.kind == MarkKind::Corrupt && m.order == Order::None)
                .map(|(n, _)| n)
                .collect();
            if waiting.is_empty() || registry.live_locations(handle, now).is_empty() {
                continue;
            }
            let lease_valid = registry.lease_may_be_valid(handle, now).is_some();
            let lease_replicas = registry.lease(handle).map(|l| l.replicas.clone());
            for n in waiting {
                let in_lease = match &lease_replicas {
                    _ if !lease_valid => false,
                    Some(r) => r.contains(&n),
                    None => true,
                };
                if in_lease {
                    continue;
                }
                // The corrupt copy is at most at the table's version (it is no location, so no
                // bump reaches it).
                tracing::info!(%handle, node = %n, "deleting a corrupt replica");
                registry.order_delete(handle, n, version);
                self.stats.corrupt_deletes += 1;
                out.push((handle, n));
            }
        }
        out
    }

    /// A clone answered (`result`: the bytes copied) or failed. `current` is the chunk's version
    /// in the table now (None: the chunk was dropped). The target becomes a location only if the
    /// version is unchanged, no grant started meanwhile, and the target is still alive;
    /// otherwise it is told to delete its copy.
    pub fn finish(
        &mut self,
        registry: &mut Registry,
        order: &CloneOrder,
        current: Option<ChunkVersion>,
        result: Result<u64, FsError>,
        now: Instant,
    ) -> Finished {
        let pos = self
            .in_flight
            .iter()
            .position(|f| f.order.handle == order.handle && f.order.target.id == order.target.id);
        let entry = pos.map(|i| self.in_flight.swap_remove(i));
        let len = match result {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(handle = %order.handle, source = %order.source.addr,
                    target = %order.target.addr, "clone failed: {e}");
                if entry.is_some() {
                    self.stats.failed += 1;
                }
                return Finished::Failed;
            }
        };
        let keep = entry.as_ref().is_some_and(|f| !f.spoiled)
            && current == Some(order.version)
            && registry.is_alive(order.target.id, now);
        if keep {
            registry.add_cloned(order.handle, order.target.id, now);
            self.stats.done += 1;
            self.stats.bytes += len;
            if let Some(from) = entry.as_ref().and_then(|f| f.moved_from) {
                // The move's second half: the source's copy goes (never the last live one, and
                // never while a lease may use it).
                let live = registry.live_locations(order.handle, now);
                if live.contains(&from)
                    && live.len() > 1
                    && registry.lease_may_be_valid(order.handle, now).is_none()
                {
                    registry.order_delete(order.handle, from, order.version);
                    self.stats.moves += 1;
                }
            }
            Finished::Added
        } else {
            tracing::info!(handle = %order.handle, target = %order.target.addr,
                "the chunk changed during its clone: discarding the copy");
            registry.order_delete(order.handle, order.target.id, order.version);
            if entry.is_some() {
                self.stats.failed += 1;
            }
            Finished::Discarded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Lease;
    use quarry_proto::master::Heartbeat;
    use std::collections::{BTreeMap, BTreeSet};

    const V: ChunkVersion = ChunkVersion(5);

    fn hb(node: u64, chunks: Option<Vec<u64>>) -> Heartbeat {
        Heartbeat {
            node: NodeId(node),
            addr: format!("127.0.0.1:{}", 7000 + node),
            capacity_bytes: 1 << 40,
            used_bytes: node << 20,
            chunks: chunks.map(|c| c.into_iter().map(|h| (ChunkHandle(h), V)).collect()),
            active_requests: 0,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// Every chunk 1..=99 exists at version V.
    fn table(h: ChunkHandle) -> Option<ChunkVersion> {
        (1..100).contains(&h.0).then_some(V)
    }

    fn limits() -> RepairLimits {
        RepairLimits {
            max_concurrent_clones: 8,
            per_server: 2,
            give_up_after: Duration::from_secs(60),
            balance_slack_chunks: 0,
        }
    }

    /// A registry that heard from `servers`, each holding the listed chunks.
    fn cluster(servers: &[(u64, Vec<u64>)], t0: Instant) -> Registry {
        let mut r = Registry::new(Duration::from_secs(10), t0, ChunkHandle(0));
        for (n, chunks) in servers {
            r.heartbeat(&hb(*n, Some(chunks.clone())), &table, t0);
        }
        r
    }

    fn rows(handles: &[u64], goal: u32) -> Vec<(ChunkHandle, ChunkVersion, u32)> {
        handles.iter().map(|&h| (ChunkHandle(h), V, goal)).collect()
    }

    #[test]
    fn clones_go_to_a_new_server_fewest_live_replicas_first() {
        let t0 = Instant::now();
        // Chunk 1 has one replica, chunk 2 two, chunk 3 three.
        let mut r = cluster(
            &[
                (1, vec![1, 2, 3]),
                (2, vec![2, 3]),
                (3, vec![3]),
                (4, vec![]),
            ],
            t0,
        );
        let mut repair = Repair::new(RepairLimits {
            max_concurrent_clones: 1,
            ..limits()
        });
        let scan = repair.scan(&mut r, rows(&[1, 2, 3], 3), t0);
        assert_eq!(scan.clones.len(), 1);
        let o = &scan.clones[0];
        assert_eq!(
            o.handle,
            ChunkHandle(1),
            "the chunk with one live replica first"
        );
        assert_eq!(o.source.id, NodeId(1));
        assert_ne!(o.target.id, NodeId(1), "never a holder");
        assert_eq!(o.version, V);
        // Chunk 1 still needs one more and chunk 2 one: both wait in the queue.
        assert_eq!(scan.queued, 2);
        assert_eq!(repair.in_flight(), 1);
    }

    #[test]
    fn at_most_two_clones_per_source_and_per_target() {
        let t0 = Instant::now();
        // Twenty chunks, each on servers 1 and 2 only; servers 3..=6 are empty.
        let chunks: Vec<u64> = (1..=20).collect();
        let mut r = cluster(
            &[
                (1, chunks.clone()),
                (2, chunks.clone()),
                (3, vec![]),
                (4, vec![]),
                (5, vec![]),
                (6, vec![]),
            ],
            t0,
        );
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&chunks, 3), t0);
        // Two sources with two clones each.
        assert_eq!(scan.clones.len(), 4);
        for n in 1..=6 {
            let as_source = scan
                .clones
                .iter()
                .filter(|o| o.source.id == NodeId(n))
                .count();
            let as_target = scan
                .clones
                .iter()
                .filter(|o| o.target.id == NodeId(n))
                .count();
            assert!(as_source <= 2 && as_target <= 2, "server {n}");
        }
        let handles: BTreeSet<_> = scan.clones.iter().map(|o| o.handle).collect();
        assert_eq!(handles.len(), 4, "one clone per chunk that needs one");
        assert_eq!(scan.queued, 16);
        // Nothing more starts while those run.
        let again = repair.scan(&mut r, rows(&chunks, 3), t0);
        assert!(again.clones.is_empty());
    }

    #[test]
    fn a_chunk_two_short_gets_two_clones_to_distinct_targets() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![7]), (2, vec![]), (3, vec![])], t0);
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[7], 3), t0);
        assert_eq!(scan.clones.len(), 2);
        assert_ne!(scan.clones[0].target.id, scan.clones[1].target.id);
        assert_eq!(scan.queued, 0);
    }

    #[test]
    fn no_clone_while_a_lease_may_be_valid_or_a_grant_runs() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1, 2]), (2, vec![1, 2]), (3, vec![])], t0);
        r.set_lease(
            ChunkHandle(1),
            Lease {
                primary: NodeId(1),
                version: V,
                replicas: vec![NodeId(1), NodeId(2)],
                expires: t0 + Duration::from_secs(5),
            },
        );
        let mut repair = Repair::new(limits());
        repair.grant_started(ChunkHandle(2));
        let scan = repair.scan(&mut r, rows(&[1, 2], 3), t0);
        assert!(scan.clones.is_empty());
        assert_eq!(scan.queued, 2, "both wait in the queue");
        // Once the lease expired and the grant ended, both are cloned.
        repair.grant_ended(ChunkHandle(2));
        let later = t0 + Duration::from_secs(6);
        r.heartbeat(&hb(1, None), &table, later);
        r.heartbeat(&hb(2, None), &table, later);
        r.heartbeat(&hb(3, None), &table, later);
        let scan = repair.scan(&mut r, rows(&[1, 2], 3), later);
        assert_eq!(scan.clones.len(), 2);
    }

    #[test]
    fn no_clone_after_a_restart_until_old_leases_expired() {
        let t0 = Instant::now();
        let mut r = Registry::new(
            Duration::from_secs(10),
            t0 + Duration::from_secs(60),
            ChunkHandle(50),
        );
        r.heartbeat(&hb(1, Some(vec![1])), &table, t0);
        r.heartbeat(&hb(2, Some(vec![])), &table, t0);
        let mut repair = Repair::new(limits());
        assert!(repair.scan(&mut r, rows(&[1], 3), t0).clones.is_empty());
    }

    #[test]
    fn missing_and_unwritten_chunks_are_not_cloned() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![]), (2, vec![])], t0);
        let mut repair = Repair::new(limits());
        let mut rows = rows(&[3], 3);
        rows.push((ChunkHandle(4), ChunkVersion(1), 3));
        let scan = repair.scan(&mut r, rows, t0);
        assert!(scan.clones.is_empty());
        assert_eq!(scan.queued, 0);
    }

    #[test]
    fn a_finished_clone_counts_only_if_the_chunk_did_not_change() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1, 2, 3]), (2, vec![])], t0);
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1, 2, 3], 2), t0);
        assert_eq!(scan.clones.len(), 2, "per-source limit");
        let (a, b) = (scan.clones[0].clone(), scan.clones[1].clone());
        // a: unchanged → a location.
        assert_eq!(
            repair.finish(&mut r, &a, Some(V), Ok(1000), t0),
            Finished::Added
        );
        assert!(r.locations(a.handle).contains(&NodeId(2)));
        // b: the version moved meanwhile → discarded, the target told to delete it.
        assert_eq!(
            repair.finish(&mut r, &b, Some(ChunkVersion(6)), Ok(1000), t0),
            Finished::Discarded
        );
        assert!(!r.locations(b.handle).contains(&NodeId(2)));
        let reply = r.heartbeat(&hb(2, None), &table, t0).reply;
        assert_eq!(reply.delete, vec![(b.handle, V)]);
        let s = repair.stats();
        assert_eq!((s.done, s.bytes, s.failed), (1, 1000, 1));
        assert_eq!(repair.in_flight(), 0);
    }

    #[test]
    fn a_grant_during_a_clone_spoils_it() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![])], t0);
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1], 2), t0);
        let o = scan.clones[0].clone();
        repair.grant_started(o.handle);
        repair.grant_ended(o.handle);
        // Even with the version unchanged (the grant failed before logging), it is discarded.
        assert_eq!(
            repair.finish(&mut r, &o, Some(V), Ok(10), t0),
            Finished::Discarded
        );
        assert_eq!(r.locations(o.handle), vec![NodeId(1)]);
    }

    #[test]
    fn failed_and_lost_clones_free_their_slot() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1, 2]), (2, vec![])], t0);
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1, 2], 2), t0);
        assert_eq!(scan.clones.len(), 2);
        let f = repair.finish(
            &mut r,
            &scan.clones[0],
            Some(V),
            Err(FsError::Timeout("x".into())),
            t0,
        );
        assert_eq!(f, Finished::Failed);
        // The other never answers: after `give_up_after` it no longer counts.
        let later = t0 + Duration::from_secs(61);
        r.heartbeat(&hb(1, None), &table, later);
        r.heartbeat(&hb(2, None), &table, later);
        let scan = repair.scan(&mut r, rows(&[1, 2], 2), later);
        assert_eq!(scan.clones.len(), 2);
        assert_eq!(repair.stats().failed, 2);
    }

    #[test]
    fn extra_replicas_are_deleted_from_the_fullest_servers_but_never_the_primary() {
        let t0 = Instant::now();
        // used_bytes grows with the node id: server 4 is the fullest.
        let mut r = cluster(
            &[
                (1, vec![1, 2]),
                (2, vec![1, 2]),
                (3, vec![1, 2]),
                (4, vec![1, 2]),
            ],
            t0,
        );
        let mut full = hb(4, None);
        full.used_bytes = 1 << 39;
        r.heartbeat(&full, &table, t0);
        let mut full = hb(3, None);
        full.used_bytes = 1 << 38;
        r.heartbeat(&full, &table, t0);
        // Chunk 2's lease holder is the fullest server, and its lease still runs.
        r.set_lease(
            ChunkHandle(2),
            Lease {
                primary: NodeId(4),
                version: V,
                replicas: vec![NodeId(4), NodeId(1), NodeId(2)],
                expires: t0 + Duration::from_secs(30),
            },
        );
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1, 2], 3), t0);
        assert!(scan.clones.is_empty());
        let mut deletes = scan.deletes.clone();
        deletes.sort();
        assert_eq!(
            deletes,
            vec![(ChunkHandle(1), NodeId(4)), (ChunkHandle(2), NodeId(3))]
        );
        assert_eq!(r.live_locations(ChunkHandle(2), t0).len(), 3);
        assert!(r.live_locations(ChunkHandle(2), t0).contains(&NodeId(4)));
        let reply = r.heartbeat(&hb(3, None), &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(2), V)]);
        // Healthy now: nothing more to do.
        let scan = repair.scan(&mut r, rows(&[1, 2], 3), t0);
        assert!(scan.deletes.is_empty() && scan.clones.is_empty());
    }

    #[test]
    fn a_corrupt_replica_is_deleted_then_its_server_gets_a_fresh_copy() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1]), (3, vec![1])], t0);
        r.report_corrupt(ChunkHandle(1), NodeId(3));
        let mut repair = Repair::new(limits());
        // With three servers the only place for a new copy is the corrupt one's server: not yet.
        let scan = repair.scan(&mut r, rows(&[1], 3), t0);
        assert!(scan.clones.is_empty());
        assert_eq!(scan.deletes, vec![(ChunkHandle(1), NodeId(3))]);
        // The delete goes out, and the master asks for a full report to confirm it.
        let reply = r.heartbeat(&hb(3, None), &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(1), V)]);
        assert!(reply.want_report);
        assert!(repair.scan(&mut r, rows(&[1], 3), t0).clones.is_empty());
        // The next full report no longer lists it: server 3 may take a new copy.
        r.heartbeat(&hb(3, Some(vec![])), &table, t0);
        let scan = repair.scan(&mut r, rows(&[1], 3), t0);
        assert_eq!(scan.clones.len(), 1);
        assert_eq!(scan.clones[0].target.id, NodeId(3));
        let o = scan.clones[0].clone();
        assert_eq!(
            repair.finish(&mut r, &o, Some(V), Ok(5), t0),
            Finished::Added
        );
        assert_eq!(r.live_locations(ChunkHandle(1), t0).len(), 3);
    }

    #[test]
    fn a_corrupt_replica_still_listed_after_its_delete_is_ordered_again() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1])], t0);
        r.report_corrupt(ChunkHandle(1), NodeId(2));
        let mut repair = Repair::new(limits());
        repair.scan(&mut r, rows(&[1], 2), t0);
        assert_eq!(r.heartbeat(&hb(2, None), &table, t0).reply.delete.len(), 1);
        // Its next full report still has it (the delete failed): ordered again.
        r.heartbeat(&hb(2, Some(vec![1])), &table, t0);
        assert!(r.live_locations(ChunkHandle(1), t0) == vec![NodeId(1)]);
        let scan = repair.scan(&mut r, rows(&[1], 2), t0);
        assert_eq!(scan.deletes, vec![(ChunkHandle(1), NodeId(2))]);
    }

    #[test]
    fn the_last_copies_are_never_deleted_for_corruption() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1])], t0);
        r.report_corrupt(ChunkHandle(1), NodeId(1));
        r.report_corrupt(ChunkHandle(1), NodeId(2));
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1], 2), t0);
        assert!(scan.deletes.is_empty() && scan.clones.is_empty());
    }

    #[test]
    fn a_corrupt_secondary_of_a_running_lease_is_kept_until_the_lease_ends() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1]), (3, vec![1])], t0);
        r.set_lease(
            ChunkHandle(1),
            Lease {
                primary: NodeId(1),
                version: V,
                replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
                expires: t0 + Duration::from_secs(5),
            },
        );
        r.report_corrupt(ChunkHandle(1), NodeId(3));
        let mut repair = Repair::new(limits());
        assert!(repair.scan(&mut r, rows(&[1], 3), t0).deletes.is_empty());
        let later = t0 + Duration::from_secs(6);
        for n in 1..=3 {
            r.heartbeat(&hb(n, None), &table, later);
        }
        assert_eq!(
            repair.scan(&mut r, rows(&[1], 3), later).deletes,
            vec![(ChunkHandle(1), NodeId(3))]
        );
    }

    #[test]
    fn a_stale_server_takes_a_fresh_copy_once_its_old_one_is_gone() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1]), (3, vec![])], t0);
        // Server 3 missed the bump to V (it was down): marked stale with a delete order.
        r.mark_stale(ChunkHandle(1), NodeId(3), V);
        let mut repair = Repair::new(limits());
        assert!(repair.scan(&mut r, rows(&[1], 3), t0).clones.is_empty());
        // It comes back with its old copy (a full report); the order goes out with it.
        let mut back = hb(3, None);
        back.chunks = Some(vec![(ChunkHandle(1), ChunkVersion(4))]);
        let reply = r.heartbeat(&back, &table, t0).reply;
        assert!(reply.delete.contains(&(ChunkHandle(1), V)));
        assert!(reply.want_report);
        assert!(repair.scan(&mut r, rows(&[1], 3), t0).clones.is_empty());
        // Deleted: the next full report proves it, and a clone may go there.
        r.heartbeat(&hb(3, Some(vec![])), &table, t0);
        let scan = repair.scan(&mut r, rows(&[1], 3), t0);
        assert_eq!(scan.clones.len(), 1);
        assert_eq!(scan.clones[0].target.id, NodeId(3));
    }

    #[test]
    fn a_clone_clears_older_delete_orders_for_its_target() {
        let t0 = Instant::now();
        let mut r = cluster(&[(1, vec![1]), (2, vec![1]), (3, vec![])], t0);
        // A stale copy reported by server 3 at an older version: ordered deleted.
        let mut back = hb(3, None);
        back.chunks = Some(vec![(ChunkHandle(1), ChunkVersion(3))]);
        let reply = r.heartbeat(&back, &table, t0).reply;
        assert_eq!(reply.delete, vec![(ChunkHandle(1), ChunkVersion(3))]);
        assert_eq!(
            r.reported_stale(ChunkHandle(1)),
            vec![(NodeId(3), ChunkVersion(3))]
        );
        let mut repair = Repair::new(limits());
        let scan = repair.scan(&mut r, rows(&[1], 3), t0);
        assert_eq!(scan.clones[0].target.id, NodeId(3));
        repair.finish(&mut r, &scan.clones[0], Some(V), Ok(1), t0);
        assert!(r.reported_stale(ChunkHandle(1)).is_empty());
        assert!(r
            .heartbeat(&hb(3, None), &table, t0)
            .reply
            .delete
            .is_empty());
        // A report listed before the clone finished does not undo it.
        r.heartbeat(&hb(3, Some(vec![])), &table, t0 + Duration::from_secs(1));
        assert_eq!(r.live_locations(ChunkHandle(1), t0).len(), 3);
    }

    fn holdings(r: &Registry, handles: &[u64], t0: Instant) -> BTreeMap<u64, usize> {
        let mut held = BTreeMap::new();
        for &h in handles {
            for n in r.live_locations(ChunkHandle(h), t0) {
                *held.entry(n.0).or_insert(0) += 1;
            }
        }
        held
    }

    #[test]
    fn a_new_server_receives_replicas_until_each_holds_its_share() {
        let t0 = Instant::now();
        let all: Vec<u64> = (1..=30).collect();
        let mut r = cluster(
            &[
                (1, all.clone()),
                (2, all.clone()),
                (3, all.clone()),
                (4, vec![]),
            ],
            t0,
        );
        let mut repair = Repair::new(RepairLimits {
            balance_slack_chunks: 1,
            ..limits()
        });
        let mut rounds = 0;
        loop {
            let scan = repair.scan(&mut r, rows(&all, 3), t0);
            assert_eq!(scan.moves, scan.clones.len(), "nothing needs repair");
            assert!(
                scan.clones.len() <= 2,
                "at most 2 clones into one target at once"
            );
            if scan.clones.is_empty() {
                break;
            }
            for c in &scan.clones {
                assert_eq!(
                    c.target.id,
                    NodeId(4),
                    "only the new server is below its share"
                );
                assert_eq!(
                    repair.finish(&mut r, c, Some(V), Ok(1 << 20), t0),
                    Finished::Added
                );
            }
            rounds += 1;
            assert!(rounds < 100, "converges");
        }
        let held = holdings(&r, &all, t0);
        // 90 replicas over 4 equal servers: 22.5 each, within the slack of one chunk.
        for (n, count) in &held {
            assert!(
                (21..=24).contains(count),
                "server {n} holds {count}: {held:?}"
            );
        }
        for &h in &all {
            assert_eq!(
                r.live_locations(ChunkHandle(h), t0).len(),
                3,
                "chunk {h} keeps its goal"
            );
        }
        assert_eq!(repair.stats().moves as usize, held[&4]);
        // The sources' copies were ordered deleted.
        let reply = r.heartbeat(&hb(1, None), &table, t0).reply;
        assert_eq!(reply.delete.len(), 30 - held[&1]);
    }

    #[test]
    fn no_rebalancing_while_a_chunk_needs_repair_or_of_a_leased_chunk() {
        let t0 = Instant::now();
        let all: Vec<u64> = (1..=10).collect();
        // Chunk 10 has two replicas of three: repair first.
        let mut r = cluster(
            &[
                (1, all.clone()),
                (2, all.clone()),
                (3, (1..=9).collect()),
                (4, vec![]),
                (5, vec![]),
            ],
            t0,
        );
        let mut repair = Repair::new(RepairLimits {
            balance_slack_chunks: 1,
            max_concurrent_clones: 1,
            ..limits()
        });
        let scan = repair.scan(&mut r, rows(&all, 3), t0);
        assert_eq!((scan.clones.len(), scan.moves, scan.queued), (1, 0, 0));
        assert_eq!(scan.clones[0].handle, ChunkHandle(10));
        // While that clone runs the limit is reached: no move either.
        let scan2 = repair.scan(&mut r, rows(&all, 3), t0);
        assert!(scan2.clones.is_empty());
        let c = scan.clones[0].clone();
        repair.finish(&mut r, &c, Some(V), Ok(1), t0);
        // Every chunk but 1 is leased now: only chunk 1 may move.
        for h in 2..=10 {
            r.set_lease(
                ChunkHandle(h),
                Lease {
                    primary: NodeId(1),
                    version: V,
                    replicas: vec![NodeId(1), NodeId(2)],
                    expires: t0 + Duration::from_secs(30),
                },
            );
        }
        let mut moved = BTreeSet::new();
        for _ in 0..10 {
            let scan = repair.scan(&mut r, rows(&all, 3), t0);
            for c in &scan.clones {
                moved.insert(c.handle);
                repair.finish(&mut r, c, Some(V), Ok(1), t0);
            }
        }
        assert_eq!(moved.into_iter().collect::<Vec<_>>(), vec![ChunkHandle(1)]);
    }
}
