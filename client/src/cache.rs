//! A bounded cache of chunk locations keyed by (inode, chunk index). Entries expire so that
//! replica changes are picked up even without an error; when full, the oldest entries go.

use quarry_proto::{ChunkLocation, InodeId};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);

pub struct LocationCache {
    capacity: usize,
    entries: HashMap<(InodeId, u64), (ChunkLocation, Instant, u64)>,
    /// Insertion order for eviction: stamp → key.
    order: BTreeMap<u64, (InodeId, u64)>,
    stamp: u64,
}

impl LocationCache {
    pub fn new(capacity: usize) -> LocationCache {
        LocationCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            stamp: 0,
        }
    }

    pub fn get(&mut self, inode: InodeId, index: u64) -> Option<ChunkLocation> {
        let (loc, at, _) = self.entries.get(&(inode, index))?;
        if at.elapsed() > TTL {
            self.forget(inode, index);
            return None;
        }
        Some(loc.clone())
    }

    pub fn put(&mut self, inode: InodeId, loc: ChunkLocation) {
        let key = (inode, loc.index);
        self.forget(key.0, key.1);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.stamp += 1;
        self.order.insert(self.stamp, key);
        self.entries.insert(key, (loc, Instant::now(), self.stamp));
    }

    pub fn forget(&mut self, inode: InodeId, index: u64) {
        if let Some((_, _, stamp)) = self.entries.remove(&(inode, index)) {
            self.order.remove(&stamp);
        }
    }

    pub fn forget_inode(&mut self, inode: InodeId) {
        let keys: Vec<_> = self
            .entries
            .keys()
            .filter(|(i, _)| *i == inode)
            .copied()
            .collect();
        for (i, idx) in keys {
            self.forget(i, idx);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::{ChunkHandle, ChunkVersion};

    fn loc(index: u64) -> ChunkLocation {
        ChunkLocation {
            index,
            handle: ChunkHandle(index + 100),
            version: ChunkVersion(1),
            replicas: vec![],
        }
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut c = LocationCache::new(3);
        for i in 0..5 {
            c.put(InodeId(7), loc(i));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(InodeId(7), 0).is_none());
        assert!(c.get(InodeId(7), 1).is_none());
        assert_eq!(c.get(InodeId(7), 4).unwrap().handle, ChunkHandle(104));
        c.put(InodeId(7), loc(4));
        assert_eq!(c.len(), 3);
        c.forget_inode(InodeId(7));
        assert_eq!(c.len(), 0);
    }
}
