//! The chunked copy: fills the ghost table range by range of the chunking key.
//!
//! Boundaries come from index seeks (`WHERE key > prev ORDER BY key LIMIT 1 OFFSET n-1`: a seek
//! plus a short walk of the index, never an OFFSET from the table's start). Each chunk is one
//! short READ COMMITTED transaction that **re-syncs** its range with the pair in
//! [`crate::resync`] — delete the range in the ghost, insert it again from the original — so a
//! chunk can be retried without harm. Over an integer key the insert reads the original through
//! a consistent snapshot and locks none of its rows (an application never waits for the copy);
//! the applier holds back changes to the chunk's range until it has committed and then
//! re-syncs them ([`crate::apply::Frontier`]). Over other keys, whose order zdm-ost cannot
//! reproduce, the read is a `NOWAIT` locking read and changes are applied at once.
//!
//! The copy stops at the largest key that existed when it started (read after the binlog stream
//! started): rows inserted beyond it reach the ghost through the binlog.
//!
//! Chunk size adapts toward `--chunk-time` per chunk (bounded growth), and halves when a chunk
//! keeps running into application row locks.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::backoff;
use crate::key::{display_range, names, range_predicate, read_list, Key, KeyPart};
use crate::progress::Progress;
use crate::resync::{classify, describe_offending_row, resync, Failure, Mode, Selection, Tables};
use crate::sql::{quote_ident, server_message};

pub const MIN_CHUNK: u64 = 10;
pub const MAX_CHUNK: u64 = 100_000;
/// Bytes of row data one chunk may copy. A chunk's rows reach the binlog at its commit, written
/// out while every other commit on the server waits: measured under a 500 txn/s load, a chunk of
/// tens of MB held the application's commits for 370 ms. With 8 MiB against 4 MiB (the
/// benchmark's 1M rows under 500 txn/s, 3 rounds each, 2026-11-30) the copy took 4.5-4.8 s
/// instead of 4.7-5.5 s, with the load's p99 at 14.6-17.0 ms (13.6-16.1) and its worst
/// transaction at 23-31 ms (28-43).
pub const MAX_CHUNK_BYTES: u64 = 8 << 20;

/// The most rows a chunk may copy, for rows of about this many bytes.
pub fn max_chunk_rows(avg_row_bytes: u64) -> u64 {
    (MAX_CHUNK_BYTES / avg_row_bytes.max(1)).clamp(MIN_CHUNK, MAX_CHUNK)
}
const DUPLICATE_RETRIES: u32 = 6;
/// Tries at a chunk whose rows other sessions keep locked: with the backoff's 500 ms pauses,
/// about ten minutes. Every retry loop is bounded (docs/design.md, fidelity rule 6).
const CONFLICT_RETRIES: u32 = 1200;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("copying rows {range} of `{table}`: the new schema rejects the data: {message}. Nothing was renamed; the original table is untouched")]
    Data {
        table: String,
        range: String,
        message: String,
    },
    #[error("copying rows {range} of `{table}`: {message}")]
    Fatal {
        table: String,
        range: String,
        message: String,
    },
    #[error("cancelled")]
    Cancelled,
}

impl From<crate::apply::ApplyError> for CopyError {
    fn from(_: crate::apply::ApplyError) -> Self {
        CopyError::Cancelled
    }
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub chunk_size: u64,
    pub chunk_time: Duration,
    /// Resume after this key (every chunk up to it was copied by an earlier run).
    pub start_after: Option<Key>,
    /// Chunks copied in parallel, each worker on its own connection.
    pub threads: usize,
    /// The largest chunk, in rows ([`max_chunk_rows`]).
    pub max_chunk: u64,
    /// When the orchestrator has started it, chunks read the original through consistent
    /// snapshots (no row locks) and move it as they commit; otherwise they take `NOWAIT` locks.
    pub frontier: Arc<crate::apply::Frontier>,
}

/// Copies every row up to the largest key present now, finding chunk boundaries on `conn` (one
/// of [`crate::conn::Endpoint::connect_read_committed`]'s). Returns rows copied.
pub async fn copy(
    conn: &mut Conn,
    endpoint: &crate::conn::Endpoint,
    tables: Arc<Tables>,
    opts: CopyOptions,
    progress: Arc<Progress>,
    throttle: Arc<crate::throttle::Throttle>,
    cancel: CancellationToken,
) -> Result<u64, CopyError> {
    let t = &*tables;
    let fatal = |range: &str, e: &mysql_async::Error| CopyError::Fatal {
        table: t.orig.clone(),
        range: range.to_string(),
        message: server_message(e),
    };
    let max_sql = format!(
        "SELECT /* zdm-ost */ {} FROM {} FORCE INDEX ({}) ORDER BY {} LIMIT 1",
        read_list(&t.key_orig),
        t.orig_q(),
        quote_ident(&t.key_index),
        t.key_orig
            .iter()
            .map(|c| format!("{} DESC", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // (binary protocol, so the key comes back typed like every other key)
    let max: Option<mysql_async::Row> = conn
        .exec_first(max_sql, ())
        .await
        .map_err(|e| fatal("(max key)", &e))?;
    let Some(max) = max else {
        return Ok(0);
    };
    let max: Key = max
        .unwrap()
        .into_iter()
        .map(KeyPart::from_query_value)
        .collect();
    opts.frontier.set_end(&max);
    let mode = if opts.frontier.is_copying() {
        Mode::Snapshot
    } else {
        Mode::Locking
    };
    let max_chunk = opts.max_chunk.clamp(MIN_CHUNK, MAX_CHUNK);
    let size = Arc::new(AtomicU64::new(opts.chunk_size.clamp(MIN_CHUNK, max_chunk)));
    let threads = opts.threads.max(1);
    let stop = cancel.child_token();
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(threads);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let watermark = Arc::new(Mutex::new(Watermark::default()));
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut wconn = endpoint
            .connect_read_committed()
            .await
            .map_err(|e| CopyError::Fatal {
                table: t.orig.clone(),
                range: "(connecting a copy worker)".into(),
                message: e.to_string(),
            })?;
        let w = Worker {
            endpoint: endpoint.clone(),
            tables: Arc::clone(&tables),
            progress: Arc::clone(&progress),
            throttle: Arc::clone(&throttle),
            size: Arc::clone(&size),
            max_chunk,
            chunk_time: opts.chunk_time,
            watermark: Arc::clone(&watermark),
            frontier: Arc::clone(&opts.frontier),
            mode,
            rx: Arc::clone(&rx),
            stop: stop.clone(),
        };
        workers.push(tokio::spawn(async move {
            let r = w.run(&mut wconn).await;
            let _ = wconn.disconnect().await;
            if r.is_err() {
                w.stop.cancel();
            }
            r
        }));
    }

    // The boundary finder: index seeks, a chunk ahead of each worker.
    let mut prev: Option<Key> = opts.start_after.clone();
    let mut index = 0u64;
    loop {
        if stop.is_cancelled() || !throttle.wait_soft(&stop).await {
            break;
        }
        let requested = progress.chunk_size_request.swap(0, Relaxed);
        if requested != 0 {
            size.store(requested.clamp(MIN_CHUNK, max_chunk), Relaxed);
        }
        // the chunk's upper bound: `size` rows on, but never past `max`
        let hi = match t
            .key_after(conn, prev.as_ref(), Some(&max), size.load(Relaxed))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                stop.cancel();
                join(workers).await?;
                return Err(fatal("(chunk boundary)", &e));
            }
        };
        let last = hi.is_none();
        let hi: Key = hi.unwrap_or_else(|| max.clone());
        let chunk = Chunk {
            index,
            lo: prev.clone(),
            hi: hi.clone(),
        };
        index += 1;
        tokio::select! {
            r = tx.send(chunk) => if r.is_err() { break; },
            _ = stop.cancelled() => break,
        }
        prev = Some(hi);
        if last {
            break;
        }
    }
    drop(tx);
    let copied = join(workers).await?;
    if cancel.is_cancelled() {
        return Err(CopyError::Cancelled);
    }
    Ok(copied)
}

/// Waits for every worker; the first error wins. Returns rows copied.
async fn join(
    workers: Vec<tokio::task::JoinHandle<Result<u64, CopyError>>>,
) -> Result<u64, CopyError> {
    let mut copied = 0;
    let mut first_err = None;
    for w in workers {
        match w.await {
            Ok(Ok(n)) => copied += n,
            Ok(Err(e)) => {
                if first_err.is_none() || matches!(first_err, Some(CopyError::Cancelled)) {
                    first_err = Some(e);
                }
            }
            Err(join) => {
                first_err.get_or_insert(CopyError::Fatal {
                    table: String::new(),
                    range: String::new(),
                    message: format!("a copy worker crashed: {join}"),
                });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(copied),
    }
}

/// One range of the key, `(lo, hi]`, numbered in key order.
struct Chunk {
    index: u64,
    lo: Option<Key>,
    hi: Key,
}

/// The low watermark: the key up to which every chunk is done, whatever order chunks finish in.
#[derive(Default)]
struct Watermark {
    next: u64,
    done: BTreeMap<u64, Key>,
}

struct Worker {
    endpoint: crate::conn::Endpoint,
    tables: Arc<Tables>,
    progress: Arc<Progress>,
    throttle: Arc<crate::throttle::Throttle>,
    size: Arc<AtomicU64>,
    max_chunk: u64,
    chunk_time: Duration,
    watermark: Arc<Mutex<Watermark>>,
    frontier: Arc<crate::apply::Frontier>,
    mode: Mode,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Chunk>>>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(&self, conn: &mut Conn) -> Result<u64, CopyError> {
        let t = &*self.tables;
        let mut copied = 0;
        loop {
            let chunk = {
                let mut rx = self.rx.lock().await;
                tokio::select! {
                    c = rx.recv() => c,
                    _ = self.stop.cancelled() => return Err(CopyError::Cancelled),
                }
            };
            let Some(chunk) = chunk else {
                return Ok(copied);
            };
            if !self.throttle.wait_soft(&self.stop).await {
                return Err(CopyError::Cancelled);
            }
            let range = display_range(&names(&t.key_orig), chunk.lo.as_ref(), Some(&chunk.hi));
            let started = Instant::now();
            let rows = copy_chunk(
                conn,
                &self.endpoint,
                t,
                chunk.lo.as_ref(),
                Some(&chunk.hi),
                &range,
                self.mode,
                &self.progress,
                &self.stop,
            )
            .await?;
            {
                let mut w = self.watermark.lock().unwrap_or_else(|p| p.into_inner());
                w.done.insert(chunk.index, chunk.hi);
                loop {
                    let next = w.next;
                    let Some(k) = w.done.remove(&next) else {
                        break;
                    };
                    self.progress.set_watermark(&k);
                    self.frontier.advance(&k);
                    w.next += 1;
                }
            }
            // (a test's pause here counts as chunk time, like a slow server would)
            crate::failpoint::hit("copy").await;
            let took = started.elapsed();
            copied += rows;
            self.progress.copied_rows.fetch_add(rows, Relaxed);
            self.progress.chunks.fetch_add(1, Relaxed);
            // aim the next chunk at the target time; grow at most 2x, shrink at most 4x per step
            let ratio = self.chunk_time.as_secs_f64() / took.as_secs_f64().max(0.001);
            let size = self.size.load(Relaxed);
            let next =
                ((size as f64 * ratio.clamp(0.25, 2.0)) as u64).clamp(MIN_CHUNK, self.max_chunk);
            self.size.store(next, Relaxed);
            self.progress.chunk_size.store(next, Relaxed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_chunk(
    conn: &mut Conn,
    endpoint: &crate::conn::Endpoint,
    t: &Tables,
    lo: Option<&Key>,
    hi: Option<&Key>,
    range: &str,
    mode: Mode,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<u64, CopyError> {
    let mut conflicts = 0u32;
    let mut duplicates = 0u32;
    let mut evict = Vec::new();
    loop {
        let (ghost_pred, ghost_params) = range_predicate(&t.key_ghost, lo, hi);
        let (orig_pred, orig_params) = range_predicate(&t.key_orig, lo, hi);
        let sel = Selection {
            ghost_pred,
            ghost_params,
            orig_pred: orig_pred.clone(),
            orig_params: orig_params.clone(),
            evict: evict.clone(),
        };
        let turn = t.turn().await;
        let r = resync(conn, t, sel, mode).await.map_err(|e| {
            // a duplicate on the ghost's key is handled as one on another index that no
            // eviction can resolve
            let failure = match classify(&e, &t.ghost_index) {
                Failure::KeyDuplicate(m) => Failure::Duplicate(m, String::new()),
                f => f,
            };
            (e, failure)
        });
        drop(turn);
        match r {
            Ok(n) => return Ok(n),
            Err((e, failure)) => match failure {
                Failure::Connection => {
                    conflicts += 1;
                    tracing::warn!("copier connection lost during chunk {range}; reconnecting");
                    backoff(conflicts, cancel).await?;
                    if let Ok(c) = endpoint.connect_read_committed().await {
                        *conn = c;
                    }
                }
                Failure::Conflict => {
                    progress.conflicts.fetch_add(1, Relaxed);
                    conflicts += 1;
                    if conflicts >= CONFLICT_RETRIES {
                        return Err(CopyError::Fatal {
                            table: t.orig.clone(),
                            range: range.into(),
                            message: format!(
                                "other sessions kept rows of it locked through {conflicts} tries (about {} min); the last error: {}. Find the long transaction holding them (information_schema.INNODB_TRX) and run again",
                                conflicts / 120,
                                server_message(&e)
                            ),
                        });
                    }
                    if conflicts % 50 == 0 {
                        tracing::warn!("chunk {range} keeps meeting row locks ({conflicts} tries); still retrying");
                    }
                    backoff(conflicts, cancel).await?;
                }
                Failure::Duplicate(message, index) => {
                    // transient while the colliding row waits in the applier's set, or while
                    // the applier writes into this range at the same time (on the ghost's key);
                    // on an index the ALTER leaves alone, the retry evicts the stale row (see
                    // `resync::Selection::evict`)
                    if let Some(i) = t.evictable(&index).filter(|i| !evict.contains(i)) {
                        evict.push(i);
                    }
                    duplicates += 1;
                    if duplicates >= DUPLICATE_RETRIES {
                        return Err(CopyError::Data {
                            table: t.orig.clone(),
                            range: range.into(),
                            message,
                        });
                    }
                    backoff(duplicates + 3, cancel).await?;
                }
                Failure::KeyDuplicate(_) => unreachable!("mapped to Failure::Duplicate above"),
                Failure::Data(message) => {
                    let detail =
                        describe_offending_row(conn, t, &message, &orig_pred, orig_params).await;
                    return Err(CopyError::Data {
                        table: t.orig.clone(),
                        range: range.into(),
                        message: match detail {
                            Some(d) => format!("{message}: {d}"),
                            None => message,
                        },
                    });
                }
                Failure::Fatal(message) => {
                    return Err(CopyError::Fatal {
                        table: t.orig.clone(),
                        range: range.into(),
                        message,
                    })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_capped_by_their_bytes() {
        // 8 MiB of 250-byte rows
        assert_eq!(max_chunk_rows(250), 33_554);
        assert_eq!(max_chunk_rows(1), MAX_CHUNK);
        assert_eq!(max_chunk_rows(0), MAX_CHUNK);
        assert_eq!(max_chunk_rows(10 << 20), MIN_CHUNK);
    }
}
