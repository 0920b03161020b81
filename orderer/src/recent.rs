//! The transaction ids of the newest committed blocks, which a replica refuses to order again.
//!
//! Keeping every id ever ordered would grow without bound with the chain (and a restart would
//! read the whole chain to rebuild it). The window is counted in blocks, so every correct
//! replica at the same height holds the same ids and judges a proposal alike, whether it has run
//! all along or restarted from its last `DEDUP_WINDOW_BLOCKS` blocks. A transaction resubmitted
//! after its block has left the window is ordered again and marked DUPLICATE_TXID by the peers'
//! validation, as Fabric's orderers leave it to them entirely.

use std::collections::{HashMap, VecDeque};

/// How many of the newest blocks' transaction ids a replica remembers.
pub const DEDUP_WINDOW_BLOCKS: u64 = 1_000;

/// Transaction ids of the blocks in the window, by the newest block each was seen in.
#[derive(Debug, Clone, Default)]
pub struct RecentTxids {
    blocks: VecDeque<(u64, Vec<String>)>,
    ids: HashMap<String, u64>,
}

impl RecentTxids {
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

    pub fn contains(&self, txid: &str) -> bool {
        self.ids.contains_key(txid)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
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
        assert_eq!(running.len(), 2 * DEDUP_WINDOW_BLOCKS as usize);
        // A replica restarting at the same height rebuilds the same window from its store.
        let mut restarted = RecentTxids::default();
        for n in window_start(last + 1)..=last {
            restarted.record(n, ids(n));
        }
        assert_eq!(restarted.ids, running.ids);
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
        assert_eq!(r.len(), 1);
    }
}
