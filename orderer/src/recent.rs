//! The transaction ids already committed, which a replica refuses to order again: those of the
//! newest blocks in memory, older ones in the store's index.
//!
//! Keeping every id ever ordered in memory would grow without bound with the chain (and a
//! restart would read the whole chain to rebuild it). The window is counted in blocks, and the
//! store indexes every block it writes (in the block's own write batch), so a replica at height
//! h knows exactly the ids of blocks below h: the newest ones from the window even before the
//! store has written them, the rest from the index. Every correct replica at one height thus
//! judges a proposal alike, whether it ran all along, restarted or caught up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How many of the newest blocks' transaction ids a replica remembers.
pub const DEDUP_WINDOW_BLOCKS: u64 = 1_000;

/// The committed transaction ids of blocks older than the window (the store's index).
pub trait OlderTxids: Send + Sync {
    fn contains(&self, txid: &str) -> bool;
}

/// Transaction ids of the blocks in the window, by the newest block each was seen in, and the
/// index of the older ones.
#[derive(Clone, Default)]
pub struct RecentTxids {
    blocks: VecDeque<(u64, Vec<String>)>,
    ids: HashMap<String, u64>,
    older: Option<Arc<dyn OlderTxids>>,
}

impl std::fmt::Debug for RecentTxids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentTxids")
            .field("blocks", &self.blocks.len())
            .field("ids", &self.ids.len())
            .field("older", &self.older.is_some())
            .finish()
    }
}

impl RecentTxids {
    /// An empty window in front of the index of older blocks.
    pub fn with_older(older: Arc<dyn OlderTxids>) -> Self {
        Self {
            older: Some(older),
            ..Self::default()
        }
    }

    /// Records block `number`'s transaction ids and forgets blocks that leave the window.
    pub fn record(&mut self, number: u64, txids: Vec<String>) {
        for t in &txids {
            self.ids.insert(t.clone(), number);
        }
        self.blocks.push_back((number, txids));
        let oldest_kept = number.saturating_sub(DEDUP_WINDOW_BLOCKS - 1);
        while let Some((n, _)) = self.blocks.front() {
            if *n >= oldest_kept {
                break;
            }
            let Some((n, old)) = self.blocks.pop_front() else {
                break;
            };
            for t in old {
                // A later block may carry the id again (after it had left the window once).
                if self.ids.get(&t) == Some(&n) {
                    self.ids.remove(&t);
                }
            }
        }
    }

    /// Whether `txid` is in a committed block.
    pub fn contains(&self, txid: &str) -> bool {
        self.ids.contains_key(txid) || self.older.as_ref().is_some_and(|o| o.contains(txid))
    }

    /// How many ids the window holds in memory.
    pub fn in_window(&self) -> usize {
        self.ids.len()
    }
}

/// The first block a replica at `height` remembers.
pub fn window_start(height: u64) -> u64 {
    height.saturating_sub(DEDUP_WINDOW_BLOCKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<String> {
        vec![format!("tx-{n}-a"), format!("tx-{n}-b")]
    }

    #[test]
    fn ids_leave_with_their_block_and_the_window_matches_a_restart() {
        let mut running = RecentTxids::default();
        let last = DEDUP_WINDOW_BLOCKS + 10;
        for n in 1..=last {
            running.record(n, ids(n));
        }
        assert!(
            !running.contains("tx-10-a"),
            "block 10 is out of the window"
        );
        assert!(running.contains("tx-11-a") && running.contains(&format!("tx-{last}-b")));
        assert_eq!(running.in_window(), 2 * DEDUP_WINDOW_BLOCKS as usize);
        // A replica restarting at the same height rebuilds the same window from its store.
        let mut restarted = RecentTxids::default();
        for n in window_start(last + 1)..=last {
            restarted.record(n, ids(n));
        }
        assert_eq!(restarted.ids, running.ids);
    }

    /// An id whose block left the window is still known through the index: a request replayed
    /// from an old block is refused, not ordered again.
    #[test]
    fn ids_older_than_the_window_are_found_in_the_index() {
        struct Index;
        impl OlderTxids for Index {
            fn contains(&self, txid: &str) -> bool {
                txid == "tx-1-a"
            }
        }
        let mut r = RecentTxids::with_older(Arc::new(Index));
        for n in 1..=DEDUP_WINDOW_BLOCKS + 5 {
            r.record(n, ids(n));
        }
        assert!(r.contains("tx-1-a"), "from the index");
        assert!(
            !r.contains("tx-1-b"),
            "neither in the window nor in this index"
        );
        assert!(r.contains(&format!("tx-{}-b", DEDUP_WINDOW_BLOCKS + 5)));
    }

    #[test]
    fn an_id_ordered_again_after_leaving_the_window_is_kept_for_its_new_block() {
        let mut r = RecentTxids::default();
        r.record(1, vec!["again".into()]);
        for n in 2..=DEDUP_WINDOW_BLOCKS {
            r.record(n, Vec::new());
        }
        assert!(r.contains("again"));
        r.record(DEDUP_WINDOW_BLOCKS + 1, vec!["again".into()]);
        assert!(r.contains("again"), "block 1 left, the new block keeps it");
        assert_eq!(r.in_window(), 1);
    }
}
