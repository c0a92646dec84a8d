//! The chunked copy: fills the ghost table range by range of the chunking key.
//!
//! Boundaries come from index seeks (`WHERE key > prev ORDER BY key LIMIT 1 OFFSET n-1`: a seek
//! plus a short walk of the index, never an OFFSET from the table's start). Each chunk is one
//! short READ COMMITTED transaction that **re-syncs** its range with the pair in
//! [`crate::resync`] — delete the range in the ghost, insert it again from the original with a
//! `NOWAIT` locking read — so a chunk can be retried, or race the applier, without harm.
//!
//! The copy stops at the largest key that existed when it started (read after the binlog stream
//! started): rows inserted beyond it reach the ghost through the binlog.
//!
//! Chunk size adapts toward `--chunk-time` per chunk (bounded growth), and halves when a chunk
//! keeps running into application row locks.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::backoff;
use crate::key::{compare_predicate, display_key, range_predicate, Cmp, Key, KeyPart};
use crate::progress::Progress;
use crate::resync::{classify, describe_offending_row, resync, Failure, Mode, Selection, Tables};
use crate::sql::{ident_list, quote_ident, server_message};

pub const MIN_CHUNK: u64 = 10;
pub const MAX_CHUNK: u64 = 100_000;
const DUPLICATE_RETRIES: u32 = 6;

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
}

/// Copies every row up to the largest key present now. Returns rows copied.
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
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(|e| fatal("(setup)", &e))?;
    let keys = ident_list(&t.key_orig);
    let max_sql = format!(
        "SELECT /* zdm-ost */ {keys} FROM {} FORCE INDEX ({}) ORDER BY {} LIMIT 1",
        t.orig_q(),
        quote_ident(&t.key_index),
        t.key_orig
            .iter()
            .map(|c| format!("{} DESC", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let max: Option<mysql_async::Row> = conn
        .query_first(max_sql)
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
    let mut size = opts.chunk_size.clamp(MIN_CHUNK, MAX_CHUNK);
    let mut prev: Option<Key> = opts.start_after.clone();
    let mut copied = 0u64;
    loop {
        if cancel.is_cancelled() || !throttle.wait_soft(&cancel).await {
            return Err(CopyError::Cancelled);
        }
        let requested = progress.chunk_size_request.swap(0, Relaxed);
        if requested != 0 {
            size = requested.clamp(MIN_CHUNK, MAX_CHUNK);
        }
        // the chunk's upper bound: `size` rows on, but never past `max`
        let (le_max, le_params) = compare_predicate(&t.key_orig, Cmp::Le, &max);
        let (mut where_sql, mut params) = (le_max, le_params);
        if let Some(p) = &prev {
            let (gt, gp) = compare_predicate(&t.key_orig, Cmp::Gt, p);
            where_sql = format!("{gt} AND {where_sql}");
            params = gp.into_iter().chain(params).collect();
        }
        let boundary_sql = format!(
            "SELECT /* zdm-ost */ {keys} FROM {} FORCE INDEX ({}) WHERE {where_sql} ORDER BY {keys} LIMIT 1 OFFSET {}",
            t.orig_q(),
            quote_ident(&t.key_index),
            size - 1
        );
        let hi: Option<mysql_async::Row> = conn
            .exec_first(boundary_sql, params)
            .await
            .map_err(|e| fatal("(chunk boundary)", &e))?;
        let last = hi.is_none();
        let hi: Key = match hi {
            Some(r) => r
                .unwrap()
                .into_iter()
                .map(KeyPart::from_query_value)
                .collect(),
            None => max.clone(),
        };
        let range = format!(
            "{} .. {}",
            prev.as_ref()
                .map(|p| format!("after {}", display_key(&t.key_orig, p)))
                .unwrap_or_else(|| "from the start".into()),
            display_key(&t.key_orig, &hi)
        );
        let started = Instant::now();
        let rows = copy_chunk(
            conn,
            endpoint,
            t,
            prev.as_ref(),
            Some(&hi),
            &range,
            &progress,
            &cancel,
        )
        .await?;
        progress.set_watermark(&hi);
        // (a test's pause here counts as chunk time, like a slow server would)
        crate::failpoint::hit("copy").await;
        let took = started.elapsed();
        copied += rows;
        progress.copied_rows.fetch_add(rows, Relaxed);
        progress.chunks.fetch_add(1, Relaxed);
        // aim the next chunk at the target time; grow at most 2x, shrink at most 4x per step
        let ratio = opts.chunk_time.as_secs_f64() / took.as_secs_f64().max(0.001);
        size = ((size as f64 * ratio.clamp(0.25, 2.0)) as u64).clamp(MIN_CHUNK, MAX_CHUNK);
        progress.chunk_size.store(size, Relaxed);
        prev = Some(hi);
        if last {
            return Ok(copied);
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
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<u64, CopyError> {
    let mut conflicts = 0u32;
    let mut duplicates = 0u32;
    loop {
        let (ghost_pred, ghost_params) = range_predicate(&t.key_ghost, lo, hi);
        let (orig_pred, orig_params) = range_predicate(&t.key_orig, lo, hi);
        let sel = Selection {
            ghost_pred,
            ghost_params,
            orig_pred: orig_pred.clone(),
            orig_params: orig_params.clone(),
        };
        match resync(conn, t, sel, Mode::Transaction).await {
            Ok(n) => return Ok(n),
            Err(e) => match classify(&e, &t.ghost_index) {
                Failure::Connection => {
                    conflicts += 1;
                    tracing::warn!("copier connection lost during chunk {range}; reconnecting");
                    backoff(conflicts, cancel).await?;
                    if let Ok(mut c) = endpoint.connect().await {
                        if crate::apply::set_read_committed(&mut c).await.is_ok() {
                            *conn = c;
                        }
                    }
                }
                Failure::Conflict => {
                    progress.conflicts.fetch_add(1, Relaxed);
                    conflicts += 1;
                    if conflicts % 50 == 0 {
                        tracing::warn!("chunk {range} keeps meeting row locks ({conflicts} tries); still retrying");
                    }
                    backoff(conflicts, cancel).await?;
                }
                Failure::Duplicate(message) => {
                    // transient while the colliding row waits in the applier's set
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
