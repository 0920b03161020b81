//! The audit feed's disk queue: one folder per destination, one file per event named by its
//! sequence number (`00000000000000000042.json`), written to a temporary name, fsynced, renamed,
//! and the folder fsynced before the sender may see it. Sent events are deleted. A folder of
//! files rather than a RocksDB column: the queue outlives an outage of the audit repository
//! independently of the ledgers (no peer-wide database exists to hold it), an operator can read,
//! copy or replay the waiting events with ordinary tools, and the order is the names' order.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::AuditError;

const SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".json.tmp";

/// A bounded queue of events on disk, oldest first.
pub struct DiskQueue {
    dir: PathBuf,
    max_events: usize,
    /// Sequence numbers of the durable, unsent events, oldest first.
    seqs: Mutex<VecDeque<u64>>,
    /// Written but not yet made durable by a folder sync (not visible to the sender).
    staged: Mutex<Vec<u64>>,
    ready: tokio::sync::Notify,
}

fn io(dir: &Path, e: std::io::Error) -> AuditError {
    AuditError::Queue {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

impl DiskQueue {
    /// Opens (creating) the folder: events left by an earlier run are kept, in order; half-written
    /// temporaries (a crash before their rename) are removed.
    pub fn open(dir: &Path, max_events: usize) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                std::fs::remove_file(entry.path()).map_err(|e| io(dir, e))?;
            } else if let Some(seq) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_events: max_events.max(1),
            seqs: Mutex::new(seqs.into()),
            staged: Mutex::new(Vec::new()),
            ready: tokio::sync::Notify::new(),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// The highest sequence number on disk.
    pub fn last_seq(&self) -> Option<u64> {
        self.seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .copied()
    }

    /// Events waiting (durable or staged).
    pub fn len(&self) -> usize {
        self.seqs.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.staged.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bound is reached: the next event is refused.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_events
    }

    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// Writes an event's file (fsynced); it becomes durable and visible at the next [`sync`].
    ///
    /// [`sync`]: DiskQueue::sync
    pub fn stage(&self, seq: u64, bytes: &[u8]) -> Result<(), AuditError> {
        let tmp = self.dir.join(format!("{seq:020}{TMP_SUFFIX}"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(seq))
        };
        write().map_err(|e| io(&self.dir, e))?;
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seq);
        Ok(())
    }

    /// Makes the staged events' renames durable (one folder fsync for a batch), then hands them
    /// to the sender.
    pub fn sync(&self) -> Result<(), AuditError> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
        if staged.is_empty() {
            return Ok(());
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))?;
        self.seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(staged);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest durable event, waiting until there is one.
    pub async fn next(&self) -> Result<(u64, Vec<u8>), AuditError> {
        loop {
            let front = self
                .seqs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .front()
                .copied();
            match front {
                Some(seq) => {
                    let bytes = tokio::fs::read(self.path(seq))
                        .await
                        .map_err(|e| io(&self.dir, e))?;
                    return Ok((seq, bytes));
                }
                None => self.ready.notified().await,
            }
        }
    }

    /// Deletes a sent event. Not fsynced: after a crash the event may be sent again, which
    /// at-least-once delivery allows; losing it would not be.
    pub async fn remove(&self, seq: u64) -> Result<(), AuditError> {
        tokio::fs::remove_file(self.path(seq))
            .await
            .map_err(|e| io(&self.dir, e))?;
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        if seqs.front() == Some(&seq) {
            seqs.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_come_out_in_order_survive_a_reopen_and_the_bound_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = DiskQueue::open(dir.path(), 3).expect("open");
        for seq in [5, 6, 7] {
            q.stage(seq, format!("event {seq}").as_bytes())
                .expect("stage");
        }
        assert!(q.is_full(), "staged events count against the bound");
        q.sync().expect("sync");
        // A crash mid-write leaves a temporary, which a reopen removes.
        std::fs::write(dir.path().join("00000000000000000008.json.tmp"), b"half").expect("tmp");
        drop(q);
        let q = DiskQueue::open(dir.path(), 3).expect("reopen");
        assert_eq!(q.last_seq(), Some(7));
        assert!(!dir.path().join("00000000000000000008.json.tmp").exists());
        let (seq, bytes) = q.next().await.expect("next");
        assert_eq!((seq, bytes.as_slice()), (5, b"event 5".as_slice()));
        q.remove(5).await.expect("remove");
        assert!(!q.is_full());
        assert_eq!(q.next().await.expect("next").0, 6);
        assert_eq!(q.len(), 2);
    }
}
