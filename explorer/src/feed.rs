//! The live channel: a Deliver stream from the peer keeps the newest blocks' summaries (at most
//! [`MAX_RECENT_BLOCKS`]) and the consenters' names, and passes each new block to the pages'
//! Server-Sent-Event subscribers (at most [`MAX_SSE_SUBSCRIBERS`] at once, each with a buffer
//! of [`SSE_BUFFER`] blocks; a subscriber that falls further behind skips blocks, it does not
//! hold the feed back).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medledger_common::channelconfig::ChannelConfig;
use medledger_proto::common::Block;
use tokio::sync::{Semaphore, broadcast, watch};

use crate::chain::{BlockSummary, summarize};
use crate::peer::{Delivered, Peer, delivered};

/// Block summaries kept in memory for the channel page.
pub const MAX_RECENT_BLOCKS: usize = 64;
/// Pages following the channel live at once; the next is refused (503) until one leaves.
pub const MAX_SSE_SUBSCRIBERS: usize = 32;
/// Blocks buffered per live subscriber.
pub const SSE_BUFFER: usize = 64;
/// Consenters named in one configuration (a larger set is cut to this for display).
pub const MAX_CONSENTERS_SHOWN: usize = 64;

const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// What the feed knows, shared with the pages.
pub struct Feed {
    recent: Mutex<VecDeque<BlockSummary>>,
    consenters: Mutex<BTreeMap<u32, String>>,
    blocks: broadcast::Sender<BlockSummary>,
    /// Height as the Deliver stream has seen it (0 before its first block).
    height: watch::Sender<u64>,
    /// The Deliver stream's state, for the channel page ("live", or why not).
    status: Mutex<String>,
    pub subscribers: Arc<Semaphore>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(MAX_RECENT_BLOCKS)),
            consenters: Mutex::new(BTreeMap::new()),
            blocks: broadcast::channel(SSE_BUFFER).0,
            height: watch::channel(0).0,
            status: Mutex::new("connecting".into()),
            subscribers: Arc::new(Semaphore::new(MAX_SSE_SUBSCRIBERS)),
        }
    }
}

impl Feed {
    /// The newest blocks, newest first.
    pub fn recent(&self) -> Vec<BlockSummary> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The name of consenter `id` (`host:port (MSP)`), when its configuration is known.
    pub fn consenter(&self, id: u32) -> Option<String> {
        self.consenters.lock().ok()?.get(&id).cloned()
    }

    pub fn status(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set_status(&self, s: impl Into<String>) {
        if let Ok(mut st) = self.status.lock() {
            *st = s.into();
        }
    }

    /// A receiver of new blocks' summaries.
    pub fn subscribe(&self) -> broadcast::Receiver<BlockSummary> {
        self.blocks.subscribe()
    }

    /// Waits until the feed has seen `height` blocks (for tests and the first page load).
    pub async fn wait_height(&self, height: u64, within: Duration) -> bool {
        let mut rx = self.height.subscribe();
        tokio::time::timeout(within, rx.wait_for(|h| *h >= height))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Takes the consenters' names from a configuration block.
    pub fn learn_config(&self, block: &Block) {
        let Ok(config) = ChannelConfig::from_block(block) else {
            return;
        };
        let names: BTreeMap<u32, String> = config
            .consenters
            .iter()
            .take(MAX_CONSENTERS_SHOWN)
            .map(|c| (c.id, format!("{}:{} ({})", c.host, c.port, c.msp_id)))
            .collect();
        if let Ok(mut c) = self.consenters.lock() {
            *c = names;
        }
    }

    fn push(&self, block: &Block) -> u64 {
        let summary = summarize(block);
        let number = summary.number;
        if summary.is_config {
            self.learn_config(block);
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.back().is_some_and(|b| b.number >= number) {
                // A reconnection re-delivered it.
                return number + 1;
            }
            if r.len() == MAX_RECENT_BLOCKS {
                r.pop_front();
            }
            r.push_back(summary.clone());
        }
        self.height.send_replace(number + 1);
        // No subscriber is not an error.
        let _ = self.blocks.send(summary);
        number + 1
    }
}

/// Follows the channel for as long as the explorer runs: the newest [`MAX_RECENT_BLOCKS`]
/// blocks first, then each new one; reconnects with backoff when the stream ends.
pub async fn follow(peer: Peer, feed: Arc<Feed>) {
    let mut next: Option<u64> = None;
    let mut backoff = RECONNECT_MIN;
    loop {
        match follow_once(&peer, &feed, &mut next).await {
            Ok(()) => backoff = RECONNECT_MIN,
            Err(reason) => {
                tracing::warn!(channel = %peer.channel, "explorer: Deliver refused or failed: {reason}");
                feed.set_status(format!("not live: {reason}"));
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn follow_once(peer: &Peer, feed: &Feed, next: &mut Option<u64>) -> Result<(), String> {
    if let Ok(config) = peer.config_block().await {
        feed.learn_config(&config);
    }
    let start = match *next {
        Some(n) => n,
        None => {
            let info = peer.chain_info().await.map_err(|e| e.to_string())?;
            info.height.saturating_sub(MAX_RECENT_BLOCKS as u64)
        }
    };
    let mut stream = peer.deliver_from(start).await.map_err(|e| e.to_string())?;
    feed.set_status("live");
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| format!("Deliver: {}", s.message()))?;
        let Some(msg) = msg else {
            return Err("the peer closed the Deliver stream".into());
        };
        match delivered(msg) {
            Some(Delivered::Block(b)) => *next = Some(feed.push(&b)),
            Some(Delivered::Status(s)) => return Err(format!("the peer ended Deliver with {s}")),
            // Filtered blocks or private data were not asked for: nothing to show.
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_keeps_a_bounded_window_and_ignores_redelivered_blocks() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        let mut previous = Vec::new();
        for n in 0..(MAX_RECENT_BLOCKS as u64 + 10) {
            let block = medledger_common::protoutil::new_block(n, previous, vec![]);
            previous = summarize(&block).hash.into_bytes();
            assert_eq!(feed.push(&block), n + 1);
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), MAX_RECENT_BLOCKS);
        assert_eq!(
            recent[0].number,
            MAX_RECENT_BLOCKS as u64 + 9,
            "newest first"
        );
        // A reconnection that delivers an old block again changes nothing.
        let again = medledger_common::protoutil::new_block(3, vec![], vec![]);
        feed.push(&again);
        assert_eq!(feed.recent().len(), MAX_RECENT_BLOCKS);
        assert_eq!(feed.recent()[0].number, MAX_RECENT_BLOCKS as u64 + 9);
        // A subscriber that fell behind its buffer skips, it does not hold the feed.
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
