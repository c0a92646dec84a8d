//! Key-based apply: the set of changed keys, deduplicated, and its flush into the ghost table.
//!
//! Correctness (keep it true; DESIGN.md "Applying changes"): the stream starts, at a recorded
//! position, before the copier reads its first chunk. Every row is then either never touched
//! after that position — and the copier's locking read of it is current — or touched, and its
//! key reaches this set; the next flush re-reads the row's current committed state from the
//! original table (or finds it gone, and the DELETE removes it). A flush is the resync pair of
//! [`crate::resync`], so it is idempotent and its order relative to copy chunks does not matter.
//! An UPDATE that changes the key brings both keys. A hot row updated a thousand times between
//! flushes costs one resync.
//!
//! While the copy runs on consistent (non-locking) reads, a changed key in a range the copy
//! has not finished is **held back** until the chunk covering it has committed (see
//! [`Frontier`]). The chunk's snapshot may miss a change made while it ran, or one whose binlog
//! event was read before its commit became visible; the key's flush after the commit re-reads
//! it. Nothing else writes into a range while its chunk runs, so copy and apply never collide.
//!
//! A flush never waits on an application's lock: its locking read is `NOWAIT`. A batch that
//! hits a locked row goes to the back of the flush's queue (with a short pause when nothing
//! else is left); one that keeps conflicting is split, and a single key whose row stays locked
//! goes back to the set for the next flush: a long-locked row holds back only itself. Keys
//! still pending at the cut-over are applied under its table lock, where no row lock is left.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::key::{cmp_integer_keys, in_predicate, Key};
use crate::progress::Progress;
use crate::resync::{classify, describe_offending_row, resync, Failure, Mode, Selection, Tables};

/// Keys per flush transaction.
pub const BATCH: usize = 500;
/// Bytes of key values per flush statement, at most. A string key is bound as hex (twice its
/// size), in both statements of the pair: 500 keys of 3 KB overflowed a 1 MB
/// `max_allowed_packet`, and the run could never finish, resumed or not.
pub const BATCH_BYTES: usize = 128 * 1024;
/// Conflicts in a row before a batch is split.
const SPLIT_AFTER: u32 = 3;
/// Conflicts in a row before a single key goes back to the set, for the next flush.
const GIVE_UP_AFTER: u32 = 6;
/// Conflicts in one flush after which a conflicting batch goes back to the set whole: when
/// most keys are locked (a long bulk UPDATE), splitting down to single keys would cost two
/// tries per key.
const CONFLICTS_PER_FLUSH: u32 = 64;
/// Times a batch may hit a duplicate on a non-key unique index before it is a real violation.
const DUPLICATE_RETRIES: u32 = 8;
/// Pauses up to this long keep a flush worker's turn (see [`Tables::turn`]).
const KEEP_TURN_MS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying changes to `{table}`: the new schema rejects the data: {message}. Nothing was renamed; the original table is untouched")]
    Data { table: String, message: String },
    #[error("applying changes to `{table}`: {message}")]
    Fatal { table: String, message: String },
    #[error("applying changes: the connection broke and could not be re-established: {0}")]
    Connection(String),
    #[error("cancelled")]
    Cancelled,
}

/// Where the copy stands, for the applier. Shared by the orchestrator (which opens and closes
/// it around a copy on consistent reads), the copier (which moves it) and the applier (which
/// holds back the keys it covers).
#[derive(Debug, Default)]
pub struct Frontier(Mutex<FrontierState>);

#[derive(Debug, Clone, Default, PartialEq)]
pub enum FrontierState {
    /// No copy on consistent reads is running: every changed key is flushed.
    #[default]
    Open,
    /// Keys above `done` (every chunk up to it has committed; `None`: nothing yet) and not
    /// above `end` (the copy's last key; `None`: not known yet) wait for their chunk.
    Copying { done: Option<Key>, end: Option<Key> },
}

impl FrontierState {
    /// Whether a changed key must wait for the copy. Keys that cannot be ordered here wait
    /// too (the orchestrator only starts a frontier over integer keys).
    pub fn holds_back(&self, k: &Key) -> bool {
        use std::cmp::Ordering::*;
        match self {
            FrontierState::Open => false,
            FrontierState::Copying { done, end, .. } => {
                let above_done = done
                    .as_ref()
                    .is_none_or(|d| !matches!(cmp_integer_keys(k, d), Some(Less | Equal)));
                let within_end = end
                    .as_ref()
                    .is_none_or(|e| cmp_integer_keys(k, e) != Some(Greater));
                above_done && within_end
            }
        }
    }
}

impl Frontier {
    /// A copy on consistent reads starts after `done` (a resumed copy) or from the start.
    pub fn start(&self, done: Option<Key>) {
        *self.lock() = FrontierState::Copying { done, end: None };
    }

    /// The copy's last key, once the copier has read it.
    pub fn set_end(&self, k: &Key) {
        if let FrontierState::Copying { end, .. } = &mut *self.lock() {
            *end = Some(k.clone());
        }
    }

    /// Every chunk up to `k` has committed.
    pub fn advance(&self, k: &Key) {
        if let FrontierState::Copying { done, .. } = &mut *self.lock() {
            *done = Some(k.clone());
        }
    }

    /// The copy is over (or stopped): nothing is held back any more.
    pub fn open(&self) {
        *self.lock() = FrontierState::Open;
    }

    pub fn is_copying(&self) -> bool {
        *self.lock() != FrontierState::Open
    }

    pub fn get(&self) -> FrontierState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FrontierState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Applier {
    tables: Arc<Tables>,
    /// Changed keys to flush.
    pending: HashSet<Key>,
    /// Changed keys waiting for the copy to pass them, and the frontier they were sorted by.
    held: HashSet<Key>,
    held_by: FrontierState,
    frontier: Arc<Frontier>,
    progress: Arc<Progress>,
}

impl Applier {
    pub fn new(tables: Arc<Tables>, progress: Arc<Progress>, frontier: Arc<Frontier>) -> Self {
        Applier {
            tables,
            pending: HashSet::new(),
            held: HashSet::new(),
            held_by: FrontierState::Open,
            frontier,
            progress,
        }
    }

    pub fn add(&mut self, keys: Vec<Key>) {
        self.pending.extend(keys);
        let n = self.pending.len() as u64;
        self.progress.backlog.store(n, Relaxed);
        self.progress.max_backlog.fetch_max(n, Relaxed);
    }

    /// Keys to flush (held-back keys not counted).
    pub fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// No key pending or held back: every change received has been flushed.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.held.is_empty()
    }

    /// With keys held back, the frontier's `done` key when they were sorted: every change to a
    /// key at or below it has been flushed (or is pending). `None` when nothing is held.
    pub fn held_below(&self) -> Option<Option<Key>> {
        if self.held.is_empty() {
            return None;
        }
        match &self.held_by {
            FrontierState::Copying { done, .. } => Some(done.clone()),
            FrontierState::Open => Some(None),
        }
    }

    /// Sorts keys against the frontier as it is now: held keys it has passed become pending,
    /// pending keys it has not reached are held.
    fn sort_by_frontier(&mut self) {
        let f = self.frontier.get();
        // held keys are looked at again only when the frontier has moved
        if f != self.held_by {
            let (release, keep): (HashSet<Key>, HashSet<Key>) =
                self.held.drain().partition(|k| !f.holds_back(k));
            self.pending.extend(release);
            self.held = keep;
        }
        if f != FrontierState::Open {
            let (hold, go): (HashSet<Key>, HashSet<Key>) =
                self.pending.drain().partition(|k| f.holds_back(k));
            self.held.extend(hold);
            self.pending = go;
        }
        self.held_by = f;
        self.progress
            .held_back
            .store(self.held.len() as u64, Relaxed);
    }

    /// Re-syncs every pending key, in transactions of [`BATCH`] keys, one flush worker per
    /// connection: batches hold disjoint keys (and, over an integer key, contiguous runs of
    /// it), so they can run side by side.
    ///
    /// Not cancellation-safe: the keys of a batch are out of the set while it runs, so the
    /// future must be driven to completion (it checks `cancel` itself between batches).
    pub async fn flush(
        &mut self,
        conns: &mut [Conn],
        cancel: &CancellationToken,
    ) -> Result<u64, ApplyError> {
        self.flush_mode(conns, Mode::Locking, cancel).await
    }

    /// Re-syncs every pending key with autocommit statements, for the cut-over's locking
    /// session (a transaction there would release `LOCK TABLES`).
    pub async fn flush_under_table_lock(
        &mut self,
        conn: &mut Conn,
        cancel: &CancellationToken,
    ) -> Result<u64, ApplyError> {
        self.flush_mode(std::slice::from_mut(conn), Mode::UnderTableLock, cancel)
            .await
    }

    async fn flush_mode(
        &mut self,
        conns: &mut [Conn],
        mode: Mode,
        cancel: &CancellationToken,
    ) -> Result<u64, ApplyError> {
        self.sort_by_frontier();
        if self.pending.is_empty() {
            self.progress.backlog.store(0, Relaxed);
            return Ok(0);
        }
        let mut keys: Vec<Key> = self.pending.drain().collect();
        if keys
            .first()
            .is_some_and(|k| cmp_integer_keys(k, k).is_some())
        {
            keys.sort_by(|a, b| cmp_integer_keys(a, b).unwrap_or(std::cmp::Ordering::Equal));
        }
        let shared = Shared {
            work: Mutex::new(
                batches(&keys)
                    .into_iter()
                    .map(|c| Batch {
                        keys: c.to_vec(),
                        conflicts: 0,
                        duplicates: 0,
                        evict: Vec::new(),
                    })
                    .collect(),
            ),
            returned: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            lost: Mutex::new(None),
            stop: std::sync::atomic::AtomicBool::new(false),
            conflicts: std::sync::atomic::AtomicU32::new(0),
        };
        let t = Arc::clone(&self.tables);
        let progress = Arc::clone(&self.progress);
        // inserts that take turns run one at a time anyway: one worker then, so none waits for
        // a turn only to find the work done
        let workers = match (&t.insert_slot, mode) {
            (Some(_), Mode::Locking | Mode::Snapshot) => 1,
            _ => conns.len(),
        };
        let applied: u64 = futures_util::future::join_all(
            conns
                .iter_mut()
                .take(workers)
                .map(|c| flush_worker(c, &t, mode, &progress, &shared, cancel)),
        )
        .await
        .into_iter()
        .sum();
        // keys of batches not done (a lost connection, a row still locked) go back to the set
        self.pending.extend(
            shared
                .returned
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for b in shared.work.into_inner().unwrap_or_else(|p| p.into_inner()) {
            self.pending.extend(b.keys);
        }
        self.progress
            .backlog
            .store(self.pending.len() as u64, Relaxed);
        if let Some(e) = shared
            .failed
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
        {
            return Err(e);
        }
        if let Some(reason) = shared.lost.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(ApplyError::Connection(reason));
        }
        Ok(applied)
    }
}

struct Batch {
    keys: Vec<Key>,
    conflicts: u32,
    duplicates: u32,
    /// Shared unique indexes to evict stale rows from (see `resync::Selection::evict`).
    evict: Vec<usize>,
}

/// What the flush workers of one flush share. The mutexes are never held across an await.
struct Shared {
    work: Mutex<VecDeque<Batch>>,
    /// Keys of batches not done: a worker's connection broke, or the row stayed locked.
    returned: Mutex<Vec<Key>>,
    /// The first error that ends the flush (data, fatal, cancelled).
    failed: Mutex<Option<ApplyError>>,
    /// Why a connection broke (the caller reconnects and flushes again).
    lost: Mutex<Option<String>>,
    stop: std::sync::atomic::AtomicBool,
    /// Conflicts met in this flush.
    conflicts: std::sync::atomic::AtomicU32,
}

impl Shared {
    fn fail(&self, e: ApplyError) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() || matches!(*f, Some(ApplyError::Cancelled)) {
            *f = Some(e);
        }
        self.stop.store(true, Relaxed);
    }

    fn work(&self) -> std::sync::MutexGuard<'_, VecDeque<Batch>> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remaining(&self) -> u64 {
        self.work().iter().map(|b| b.keys.len() as u64).sum()
    }

    /// Keys this flush leaves for the next one.
    fn give_back(&self, keys: Vec<Key>) {
        self.returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keys);
    }
}

/// One flush worker: takes batches until none is left, on its own connection.
///
/// When inserts into the ghost take turns, the worker keeps its turn from its first batch to
/// its last, through the short pauses after a conflict: given back, each retry would queue
/// behind a whole copy chunk (a batch meeting a few busy rows then lost a second per try, and
/// its keys stayed pending for seconds). The copy waits for the flush instead; a pause longer
/// than [`KEEP_TURN_MS`] (a row locked for long) gives the turn back.
async fn flush_worker(
    conn: &mut Conn,
    t: &Tables,
    mode: Mode,
    progress: &Progress,
    shared: &Shared,
    cancel: &CancellationToken,
) -> u64 {
    let mut applied = 0u64;
    let mut turn = None;
    loop {
        if shared.stop.load(Relaxed) {
            return applied;
        }
        if cancel.is_cancelled() {
            shared.fail(ApplyError::Cancelled);
            return applied;
        }
        if turn.is_none() && mode != Mode::UnderTableLock {
            turn = t.turn().await;
        }
        let next = shared.work().pop_front();
        let Some(batch) = next else {
            return applied;
        };
        let refs: Vec<&Key> = padded(&batch.keys);
        let (ghost_pred, ghost_params) = in_predicate(&t.key_ghost, &refs);
        let (orig_pred, orig_params) = in_predicate(&t.key_orig, &refs);
        let sel = Selection {
            ghost_pred,
            ghost_params,
            orig_pred: orig_pred.clone(),
            orig_params: orig_params.clone(),
            evict: batch.evict.clone(),
        };
        let e = match resync(conn, t, sel, mode).await {
            Ok(_) => {
                let n = batch.keys.len() as u64;
                applied += n;
                progress.applied_keys.fetch_add(n, Relaxed);
                progress.backlog.store(shared.remaining(), Relaxed);
                continue;
            }
            Err(e) => e,
        };
        match classify(&e, &t.ghost_index) {
            Failure::Conflict => {
                progress.conflicts.fetch_add(1, Relaxed);
                let conflicts = batch.conflicts + 1;
                // under the cut-over's table lock nothing is left for later
                let give_up = mode != Mode::UnderTableLock
                    && (conflicts >= GIVE_UP_AFTER
                        || shared.conflicts.fetch_add(1, Relaxed) >= CONFLICTS_PER_FLUSH);
                if give_up {
                    shared.give_back(batch.keys);
                } else if conflicts >= SPLIT_AFTER && batch.keys.len() > 1 {
                    let (a, b) = batch.keys.split_at(batch.keys.len() / 2);
                    let half = |k: &[Key]| Batch {
                        keys: k.to_vec(),
                        conflicts: 0,
                        duplicates: batch.duplicates,
                        evict: batch.evict.clone(),
                    };
                    shared.work().extend([half(a), half(b)]);
                } else {
                    // the other batches are the pause; alone, it waits a little
                    if shared.work().is_empty()
                        && pause(conflicts, &mut turn, cancel).await.is_err()
                    {
                        shared.fail(ApplyError::Cancelled);
                        return applied;
                    }
                    shared.work().push_back(Batch { conflicts, ..batch });
                }
            }
            Failure::Duplicate(message, index) => {
                // on an index the ALTER leaves alone, the colliding ghost row is stale: the
                // retry evicts it (see `resync::Selection::evict`)
                let evict = t.evictable(&index);
                if !retry_duplicate(batch, evict, message, t, shared, &mut turn, cancel).await {
                    return applied;
                }
            }
            Failure::KeyDuplicate(message) => {
                if !retry_duplicate(batch, None, message, t, shared, &mut turn, cancel).await {
                    return applied;
                }
            }
            Failure::Data(message) => {
                let detail =
                    describe_offending_row(conn, t, &message, &orig_pred, orig_params).await;
                shared.fail(ApplyError::Data {
                    table: t.orig.clone(),
                    message: match detail {
                        Some(d) => format!("{message}: {d}"),
                        None => message,
                    },
                });
                return applied;
            }
            Failure::Connection => {
                // this worker stops; its keys go back to the set and the caller reconnects
                shared.give_back(batch.keys);
                *shared.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                return applied;
            }
            Failure::Fatal(message) => {
                shared.fail(ApplyError::Fatal {
                    table: t.orig.clone(),
                    message,
                });
                return applied;
            }
        }
    }
}

/// The keys cut into batches of at most [`BATCH`] keys and [`BATCH_BYTES`] bytes of values
/// (a single key larger than that is a batch of its own).
fn batches(keys: &[Key]) -> Vec<&[Key]> {
    let size = |k: &Key| -> usize {
        k.iter()
            .map(|p| match p {
                crate::key::KeyPart::Bytes(b) => b.len() + 8,
                _ => 16,
            })
            .sum()
    };
    let mut out = Vec::new();
    let (mut from, mut bytes) = (0, 0);
    for (i, k) in keys.iter().enumerate() {
        let n = size(k);
        if i > from && (i - from >= BATCH || bytes + n > BATCH_BYTES) {
            out.push(&keys[from..i]);
            from = i;
            bytes = 0;
        }
        bytes += n;
    }
    if from < keys.len() {
        out.push(&keys[from..]);
    }
    out
}

/// Retries a batch that met a duplicate: after the other batches, merged with one of them (the
/// row it collides with may wait there), or after a pause when it is alone, evicting stale rows
/// on `evict` too. A duplicate that persists through [`DUPLICATE_RETRIES`] is a real violation:
/// the flush fails with it, and this returns false.
async fn retry_duplicate(
    batch: Batch,
    evict: Option<usize>,
    message: String,
    t: &Tables,
    shared: &Shared,
    turn: &mut Option<tokio::sync::OwnedMutexGuard<()>>,
    cancel: &CancellationToken,
) -> bool {
    let duplicates = batch.duplicates + 1;
    if duplicates >= DUPLICATE_RETRIES {
        shared.fail(ApplyError::Data {
            table: t.orig.clone(),
            message,
        });
        return false;
    }
    let mut keys = batch.keys;
    let mut evicts = batch.evict;
    evicts.extend(evict.filter(|i| !evicts.contains(i)));
    let other = shared.work().pop_back();
    match other {
        Some(o) => {
            keys.extend(o.keys);
            evicts.extend(
                o.evict
                    .into_iter()
                    .filter(|i| !evicts.contains(i))
                    .collect::<Vec<_>>(),
            );
        }
        None => {
            if pause(duplicates, turn, cancel).await.is_err() {
                shared.fail(ApplyError::Cancelled);
                return false;
            }
        }
    }
    shared.work().push_back(Batch {
        keys,
        conflicts: 0,
        duplicates,
        evict: evicts,
    });
    true
}

/// The batch padded (by repeating its last key, harmless in `IN`) to a power of two, so only a
/// handful of distinct statements are ever prepared.
fn padded(batch: &[Key]) -> Vec<&Key> {
    let n = batch.len().next_power_of_two();
    let mut v: Vec<&Key> = batch.iter().collect();
    while v.len() < n {
        v.push(&batch[batch.len() - 1]);
    }
    v
}

/// Growing pauses: 5 ms, 10 ms, 20 ms ... up to 500 ms.
pub async fn backoff(attempt: u32, cancel: &CancellationToken) -> Result<(), ApplyError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(backoff_ms(attempt))) => Ok(()),
        _ = cancel.cancelled() => Err(ApplyError::Cancelled),
    }
}

fn backoff_ms(attempt: u32) -> u64 {
    (5u64 << attempt.min(7)).min(500)
}

/// A flush worker's [`backoff`], giving its turn back first when the pause is longer than
/// [`KEEP_TURN_MS`].
async fn pause(
    attempt: u32,
    turn: &mut Option<tokio::sync::OwnedMutexGuard<()>>,
    cancel: &CancellationToken,
) -> Result<(), ApplyError> {
    if backoff_ms(attempt) > KEEP_TURN_MS {
        *turn = None;
    }
    backoff(attempt, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPart;

    #[test]
    fn batches_are_bounded_by_keys_and_by_bytes() {
        let int = |i: i64| -> Key { vec![KeyPart::Int(i)].into_boxed_slice() };
        let keys: Vec<Key> = (0..1200).map(int).collect();
        let sizes: Vec<usize> = batches(&keys).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![500, 500, 200]);
        let long = |i: u8| -> Key { vec![KeyPart::Bytes(vec![i; 3000])].into_boxed_slice() };
        let keys: Vec<Key> = (0..100).map(long).collect();
        let b = batches(&keys);
        assert!(
            b.iter().all(|b| b.len() * 3008 <= BATCH_BYTES),
            "{:?}",
            b.iter().map(|b| b.len()).collect::<Vec<_>>()
        );
        assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), 100);
        let huge: Vec<Key> =
            vec![vec![KeyPart::Bytes(vec![0; BATCH_BYTES * 2])].into_boxed_slice()];
        assert_eq!(batches(&huge).len(), 1);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn the_frontier_holds_back_keys_between_the_done_chunks_and_the_copy_end() {
        let k = |i: i64| -> Key { vec![KeyPart::Int(i)].into_boxed_slice() };
        let f = Frontier::default();
        assert!(!f.get().holds_back(&k(5)), "no copy: nothing waits");
        f.start(None);
        assert!(
            f.get().holds_back(&k(5)),
            "copy end unknown: everything waits"
        );
        f.set_end(&k(100));
        f.advance(&k(10));
        let s = f.get();
        assert!(
            !s.holds_back(&k(10)),
            "a committed chunk's keys are applied"
        );
        assert!(s.holds_back(&k(11)));
        assert!(s.holds_back(&k(100)));
        assert!(
            !s.holds_back(&k(101)),
            "rows beyond the copy come only through the binlog"
        );
        // a resumed copy: everything up to the checkpoint's watermark was copied
        f.start(Some(k(50)));
        assert!(!f.get().holds_back(&k(50)));
        assert!(f.get().holds_back(&k(51)));
        f.open();
        assert!(!f.get().holds_back(&k(51)));
    }

    #[test]
    fn batches_are_padded_to_powers_of_two_with_the_last_key() {
        let keys: Vec<Key> = (0..5)
            .map(|i| vec![KeyPart::Int(i)].into_boxed_slice())
            .collect();
        let p = padded(&keys);
        assert_eq!(p.len(), 8);
        assert_eq!(p[7], &keys[4]);
        assert_eq!(padded(&keys[..4]).len(), 4);
        assert_eq!(padded(&keys[..1]).len(), 1);
    }
}

/// The receiving end of the binlog stream and the applier, driven by the orchestrator: during
/// the copy it applies continuously; at cut-over it catches up to sentinels.
pub struct Follower {
    pub rx: tokio::sync::mpsc::Receiver<crate::binlog::StreamMsg>,
    pub applier: Applier,
    /// The flush workers' connections (`--apply-threads`; at least one).
    pub conns: Vec<Conn>,
    pub endpoint: crate::conn::Endpoint,
    /// How often pending keys are flushed while following.
    pub flush_every: Duration,
    /// The latest transaction boundary the stream reported.
    pub last_pos: Option<crate::binlog::BinlogPos>,
    /// A position the stream can restart from without losing a change: every change before it
    /// has been flushed into the ghost, except changes to keys above `safe_watermark`.
    pub safe_pos: Option<crate::binlog::BinlogPos>,
    /// `Some(w)`: at `safe_pos`, keys above `w` were held back for the copy, so a resumed copy
    /// must start again after `w` (`None` inside: from the start). `None`: nothing was held.
    pub safe_watermark: Option<Option<Key>>,
    /// The latest sentinel tokens read (one may arrive while a flush runs).
    pub sentinels: VecDeque<String>,
    /// Hard throttle reasons pause flushing (keys keep being collected).
    pub throttle: Option<Arc<crate::throttle::Throttle>>,
    /// Once the copy is done, the checkpoint follows `safe_pos` from here.
    pub checkpoint: Option<crate::checkpoint::Periodic>,
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the binlog stream stopped")]
    StreamEnded,
    #[error("the binlog stream did not deliver sentinel {token} within {secs} s")]
    SentinelTimeout { token: String, secs: u64 },
}

impl Follower {
    /// Not cancellation-safe (it flushes): never race it in a `select!`; it returns by itself.
    ///
    /// Receives and applies until `token` has been read from the stream (or, with no token,
    /// until `until` passes). With `flush` false, keys are only collected (the cut-over flushes
    /// them itself under the table lock).
    pub async fn follow(
        &mut self,
        token: Option<&str>,
        until: tokio::time::Instant,
        flush: bool,
        cancel: &CancellationToken,
    ) -> Result<(), FollowError> {
        if token.is_some_and(|t| self.seen(t)) {
            return Ok(());
        }
        let mut next_flush = tokio::time::Instant::now() + self.flush_every;
        let secs = until
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs();
        loop {
            let wake = if flush { next_flush.min(until) } else { until };
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    None => return Err(FollowError::StreamEnded),
                    Some(m) => if self.handle(m, token) {
                        return Ok(());
                    },
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= until {
                        return match token {
                            Some(t) => Err(FollowError::SentinelTimeout {
                                token: t.to_string(),
                                secs,
                            }),
                            None => Ok(()),
                        };
                    }
                }
                _ = cancel.cancelled() => return Err(ApplyError::Cancelled.into()),
            }
            if let (Some(c), Some(pos)) = (&mut self.checkpoint, &self.safe_pos) {
                c.tick(pos, self.safe_watermark.as_ref()).await;
            }
            let paused = self
                .throttle
                .as_ref()
                .is_some_and(|t| t.is_hard_throttled());
            if flush
                && !paused
                && (tokio::time::Instant::now() >= next_flush
                    || self.applier.backlog() >= BATCH * 4)
            {
                self.flush(cancel).await?;
                if token.is_some_and(|t| self.seen(t)) {
                    return Ok(());
                }
                next_flush = tokio::time::Instant::now() + self.flush_every;
            }
        }
    }

    /// Takes one message from the stream; true when it is the sentinel `token`.
    fn handle(&mut self, msg: crate::binlog::StreamMsg, token: Option<&str>) -> bool {
        match msg {
            crate::binlog::StreamMsg::Keys(keys) => {
                self.applier.add(keys);
                false
            }
            crate::binlog::StreamMsg::Sentinel(t, _) => {
                let hit = token == Some(t.as_str());
                if self.sentinels.len() >= 64 {
                    self.sentinels.pop_front();
                }
                self.sentinels.push_back(t);
                hit
            }
            crate::binlog::StreamMsg::Position(p) => {
                // every key received before it has been flushed (none pending or held)
                if self.applier.is_empty() {
                    self.safe_pos = Some(p.clone());
                    self.safe_watermark = None;
                }
                self.last_pos = Some(p);
                false
            }
        }
    }

    fn seen(&self, token: &str) -> bool {
        self.sentinels.iter().any(|s| s == token)
    }

    /// Flushes every pending key, reconnecting once if a connection broke. The stream keeps
    /// being read meanwhile (into a bounded buffer, taken in order afterwards): a flush that
    /// waits on the server must not leave the binlog reader behind.
    pub async fn flush(&mut self, cancel: &CancellationToken) -> Result<u64, ApplyError> {
        // Everything received before the latest position is in the set now: once the set is
        // flushed, that position is safe to restart from.
        let candidate = self.last_pos.clone();
        let mut received = Vec::new();
        let mut ended = false;
        let r = {
            let flush =
                flush_reconnecting(&mut self.applier, &mut self.conns, &self.endpoint, cancel);
            tokio::pin!(flush);
            let rx = &mut self.rx;
            loop {
                tokio::select! {
                    r = &mut flush => break r,
                    m = rx.recv(), if !ended && received.len() < RECEIVE_WHILE_FLUSHING => match m {
                        Some(m) => received.push(m),
                        None => ended = true,
                    },
                }
            }
        };
        if r.is_ok() && self.applier.backlog() == 0 && candidate.is_some() {
            self.safe_pos = candidate;
            self.safe_watermark = self.applier.held_below();
        }
        for m in received {
            self.handle(m, None);
        }
        r
    }

    /// The first flush connection, for work that needs one session (the checksum's repairs).
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conns[0]
    }
}

/// Stream messages buffered while a flush runs.
const RECEIVE_WHILE_FLUSHING: usize = 4096;

async fn flush_reconnecting(
    applier: &mut Applier,
    conns: &mut [Conn],
    endpoint: &crate::conn::Endpoint,
    cancel: &CancellationToken,
) -> Result<u64, ApplyError> {
    match applier.flush(conns, cancel).await {
        Err(ApplyError::Connection(reason)) => {
            tracing::warn!("applier connection lost ({reason}); reconnecting");
            for c in conns.iter_mut() {
                *c = endpoint
                    .connect_read_committed()
                    .await
                    .map_err(|e| ApplyError::Connection(e.to_string()))?;
            }
            applier.flush(conns, cancel).await
        }
        other => other,
    }
}
