//! What every part reports while a migration runs: counters shared as atomics, the phase, and
//! the binlog position. Parts only add to it; the orchestrator reads it for the status line.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use crate::binlog::BinlogPos;
use crate::key::Key;

/// The migration's states, in order. `Failed` can follow any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Phase {
    Inspecting,
    Planned,
    Expanded,
    Copying,
    Verifying,
    Indexing,
    CuttingOver,
    Done,
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Inspecting => "inspecting",
            Phase::Planned => "planned",
            Phase::Expanded => "expanded",
            Phase::Copying => "copying",
            Phase::Verifying => "verifying",
            Phase::Indexing => "indexing",
            Phase::CuttingOver => "cutting-over",
            Phase::Done => "done",
            Phase::Failed => "failed",
        })
    }
}

#[derive(Debug)]
pub struct Progress {
    pub started: Instant,
    pub copied_rows: AtomicU64,
    pub estimated_rows: AtomicU64,
    pub chunks: AtomicU64,
    pub chunk_size: AtomicU64,
    /// Distinct keys re-synced into the ghost table.
    pub applied_keys: AtomicU64,
    /// Keys waiting to be applied.
    pub backlog: AtomicU64,
    /// Changed keys waiting for the copy to pass them (applied right after their chunk).
    pub held_back: AtomicU64,
    /// The largest backlog seen.
    pub max_backlog: AtomicU64,
    pub conflicts: AtomicU64,
    /// The checksum's chunks checked, and how many it has in this round (0: not known yet).
    pub checked_chunks: AtomicU64,
    pub checksum_chunks: AtomicU64,
    /// The cut-over waits for the postpone flag file (or `unpostpone`).
    pub postponed: AtomicBool,
    /// The phase and when it began.
    phase: Mutex<(Phase, Instant)>,
    binlog_pos: Mutex<Option<BinlogPos>>,
    /// Every chunk up to and including this key is copied.
    watermark: Mutex<Option<Key>>,
    throttle_reason: Mutex<Option<String>>,
    pub cutover_attempts: AtomicU64,
    pub cutover_lock_ms: AtomicU64,
    /// An operator's `chunk-size=N`, for the copier's next chunk (0: none).
    pub chunk_size_request: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: Instant::now(),
            copied_rows: AtomicU64::new(0),
            estimated_rows: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            chunk_size: AtomicU64::new(0),
            applied_keys: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            max_backlog: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            checked_chunks: AtomicU64::new(0),
            checksum_chunks: AtomicU64::new(0),
            postponed: AtomicBool::new(false),
            phase: Mutex::new((Phase::Inspecting, Instant::now())),
            binlog_pos: Mutex::new(None),
            watermark: Mutex::new(None),
            throttle_reason: Mutex::new(None),
            cutover_attempts: AtomicU64::new(0),
            cutover_lock_ms: AtomicU64::new(0),
            chunk_size_request: AtomicU64::new(0),
        }
    }
}

impl Progress {
    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Sets the phase and logs the transition.
    pub fn set_phase(&self, p: Phase) {
        let mut cur = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 != p {
            tracing::info!("phase: {} -> {}", cur.0, p);
            *cur = (p, Instant::now());
        }
    }

    pub fn set_binlog_pos(&self, pos: &BinlogPos) {
        let mut cur = self.binlog_pos.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_mut() {
            Some(c) => {
                if c.file != pos.file {
                    c.file.clone_from(&pos.file);
                }
                c.pos = pos.pos;
                if pos.gtid.is_some() {
                    c.gtid.clone_from(&pos.gtid);
                }
            }
            None => *cur = Some(pos.clone()),
        }
    }

    pub fn binlog_pos(&self) -> Option<BinlogPos> {
        self.binlog_pos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_watermark(&self, k: &Key) {
        *self.watermark.lock().unwrap_or_else(|p| p.into_inner()) = Some(k.clone());
    }

    pub fn watermark(&self) -> Option<Key> {
        self.watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_throttle_reason(&self, r: Option<String>) {
        *self
            .throttle_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = r;
    }

    pub fn throttle_reason(&self) -> Option<String> {
        self.throttle_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One line for the log: phase and its progress (rows copied, with rate and ETA; chunks
    /// checksummed; time spent), apply progress, position, and what holds the run back.
    pub fn status_line(&self) -> String {
        let (phase, phase_began) = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let copied = self.copied_rows.load(Relaxed);
        let est = self.estimated_rows.load(Relaxed).max(copied);
        let elapsed = self.started.elapsed().as_secs_f64();
        let pct = if est > 0 {
            copied as f64 * 100.0 / est as f64
        } else {
            100.0
        };
        let rate = copied as f64 / elapsed.max(0.001);
        let eta = if phase == Phase::Copying && rate > 0.0 && est > copied {
            format!("{:.0}s", (est - copied) as f64 / rate)
        } else {
            "-".into()
        };
        let pos = self
            .binlog_pos()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        let mut held = match self.throttle_reason() {
            Some(r) => format!(", THROTTLED: {r}"),
            None => String::new(),
        };
        if self.postponed.load(Relaxed) {
            held.push_str(
                ", cut-over POSTPONED (remove the postpone flag file, or send unpostpone)",
            );
        }
        let applied = self.applied_keys.load(Relaxed);
        let backlog = self.backlog.load(Relaxed);
        let doing = match phase {
            Phase::Copying => format!(
                "copied {copied}/{est} rows ({pct:.1}%), applied {applied} changes, backlog {backlog} (+{} awaiting the copy), {rate:.0} rows/s, eta {eta}",
                self.held_back.load(Relaxed)
            ),
            Phase::Verifying => {
                let total = self.checksum_chunks.load(Relaxed);
                format!(
                    "checksummed {}/{} chunks, applied {applied} changes, backlog {backlog}",
                    self.checked_chunks.load(Relaxed),
                    if total == 0 { "?".to_string() } else { total.to_string() }
                )
            }
            _ => format!(
                "{:.1}s in this phase, copied {copied} rows, applied {applied} changes, backlog {backlog}",
                phase_began.elapsed().as_secs_f64()
            ),
        };
        format!("{phase}: {doing}, elapsed {elapsed:.1}s, binlog {pos}{held}")
    }
}
