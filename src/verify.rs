//! The checksum before cut-over: proves the ghost equals the original, or repairs it, or stops
//! the migration before any rename.
//!
//! Consistent point: a session takes `LOCK TABLES <t> READ, <t>_zdm_gho WRITE` (writers stall
//! for milliseconds; every other attempt locks the original WRITE, see below), a sentinel proves the stream has read every change made before, the last
//! keys are applied in that session, and two more sessions open `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT`; then the lock is released. In those snapshots both tables are in the
//! same state they had under the lock, where the ghost was complete; one session reads the
//! original and the other the ghost, side by side.
//!
//! Per chunk of the key (ranges cover the whole key space, open at both ends, so stray rows are
//! found too): `COUNT(*)` and `BIT_XOR(CRC32(...))` over the mapped columns. Each new column is
//! compared with the old column **cast to the new column's type**, so a changed type compares
//! what the new column holds with what the old value converts to; a lossy conversion shows as a
//! difference. NULLs are made distinct from empty strings (and from each other's positions) by
//! a flag string of `ISNULL()`s.
//!
//! A differing chunk is re-copied (the copier's resync of that range), then all differing
//! chunks are checked again at a new consistent point; a difference that survives
//! [`MAX_ROUNDS`] repairs aborts the migration, naming the range.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::{FollowError, Follower};
use crate::changelog::write_sentinel;
use crate::conn::Endpoint;
use crate::inspect::TableInfo;
use crate::key::{display_range, names, range_predicate, Key};
use crate::progress::Progress;
use crate::resync::Tables;
use crate::sql::{quote_ident, server_code, server_message};

/// Rows per checksum chunk.
pub const CHUNK: u64 = 5000;
/// Repair-and-recheck rounds before a difference counts as persistent.
pub const MAX_ROUNDS: u32 = 3;
/// Attempts at the consistent point's lock.
const LOCK_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyStats {
    pub chunks: u64,
    pub repaired_chunks: u64,
    pub rounds: u32,
    pub ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("checksum: the ghost table still differs from {table} after {rounds} repairs, in rows {ranges}. The ALTER changes these values (a lossy conversion?), or something else writes to the ghost. Nothing was renamed; the original table is untouched")]
    Persistent {
        table: String,
        rounds: u32,
        ranges: String,
    },
    #[error("checksum: {what}: {reason}")]
    Sql { what: &'static str, reason: String },
    #[error("checksum: {0}")]
    Follow(#[from] FollowError),
    #[error("checksum: {0}")]
    Copy(#[from] crate::copier::CopyError),
    #[error("checksum: the consistent-point lock was not granted in {0} attempts")]
    Lock(u32),
}

fn sql(what: &'static str) -> impl Fn(mysql_async::Error) -> VerifyError {
    move |e| VerifyError::Sql {
        what,
        reason: server_message(&e),
    }
}

fn connecting(e: crate::conn::ConnError) -> VerifyError {
    VerifyError::Sql {
        what: "connecting",
        reason: e.to_string(),
    }
}

/// A key range `(lo, hi]`, either end open.
pub type Range = (Option<Key>, Option<Key>);

/// The checksum expressions for the original and the ghost. A column whose type and charset
/// did not change is compared as it is; a changed one through [`cast`].
pub fn checksum_exprs(t: &Tables, original: &TableInfo, ghost: &TableInfo) -> (String, String) {
    let mut orig = Vec::new();
    let mut gho = Vec::new();
    // NULL flags only for columns that can hold NULL (CONCAT_WS skips NULLs: without a flag,
    // NULL and '' would look alike)
    let mut nullable = Vec::new();
    for (target, source) in t.targets.iter().zip(t.sources.iter()) {
        let col = ghost.column(target);
        nullable.push(
            col.is_none_or(|c| c.nullable) || original.column(source).is_none_or(|o| o.nullable),
        );
        let ty = col.map(|c| c.column_type.clone()).unwrap_or_default();
        let cs = col.and_then(|c| c.charset.clone());
        let unchanged = original
            .column(source)
            .is_some_and(|o| o.column_type == ty && o.charset == cs);
        if unchanged {
            orig.push(quote_ident(source));
            gho.push(quote_ident(target));
        } else {
            orig.push(cast(&quote_ident(source), &ty, cs.as_deref()));
            gho.push(cast(&quote_ident(target), &ty, cs.as_deref()));
        }
    }
    let build = |exprs: &[String]| {
        let flags = exprs
            .iter()
            .zip(&nullable)
            .filter(|(_, n)| **n)
            .map(|(e, _)| format!("ISNULL({e})"))
            .collect::<Vec<_>>();
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(", CONCAT({})", flags.join(", "))
        };
        // each value as its bytes: columns of different charsets (utf8mb4 beside utf16 or
        // latin1 beside cp1251) cannot be concatenated as text ("Illegal mix of collations")
        let bytes: Vec<String> = exprs
            .iter()
            .map(|e| format!("CAST({e} AS BINARY)"))
            .collect();
        format!(
            "COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', {}{flags}))), 0)",
            bytes.join(", ")
        )
    };
    (build(&orig), build(&gho))
}

/// `expr` cast to (the comparable form of) a column type.
fn cast(expr: &str, column_type: &str, charset: Option<&str>) -> String {
    let t = column_type.to_ascii_lowercase();
    let base = crate::key::base_type(&t);
    let args = t
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a.to_string());
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit" => {
            if t.contains("unsigned") || base == "bit" || base == "year" {
                format!("CAST({expr} AS UNSIGNED)")
            } else {
                format!("CAST({expr} AS SIGNED)")
            }
        }
        "decimal" | "numeric" | "dec" | "fixed" => format!(
            "CAST({expr} AS DECIMAL({}))",
            args.unwrap_or_else(|| "10,0".into())
        ),
        // a FLOAT holds single precision: a DOUBLE made FLOAT compares as the FLOAT it became
        "float" if args.is_none() => format!("CAST({expr} AS FLOAT)"),
        "float" | "double" | "real" => format!("CAST({expr} AS DOUBLE)"),
        "date" => format!("CAST({expr} AS DATE)"),
        "datetime" | "timestamp" => format!(
            "CAST({expr} AS DATETIME({}))",
            args.unwrap_or_else(|| "0".into())
        ),
        "time" => format!(
            "CAST({expr} AS TIME({}))",
            args.unwrap_or_else(|| "0".into())
        ),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" => match charset {
            Some(cs) => format!("CONVERT({expr} USING {cs})"),
            None => format!("CAST({expr} AS CHAR)"),
        },
        _ => format!("CAST({expr} AS BINARY)"),
    }
}

pub struct Verify<'a> {
    pub endpoint: &'a Endpoint,
    pub tables: Arc<Tables>,
    pub ghost: &'a TableInfo,
    pub original: &'a TableInfo,
    pub changelog: String,
    pub control: &'a mut Conn,
    pub follower: &'a mut Follower,
    pub lock_timeout: Duration,
    pub progress: Arc<Progress>,
    pub throttle: Arc<crate::throttle::Throttle>,
    pub cancel: &'a CancellationToken,
}

impl Verify<'_> {
    pub async fn run(mut self) -> Result<VerifyStats, VerifyError> {
        let started = Instant::now();
        let mut stats = VerifyStats::default();
        let exprs = Arc::new(checksum_exprs(&self.tables, self.original, self.ghost));
        let mut ranges: Option<Vec<Range>> = None;
        for round in 0..=MAX_ROUNDS {
            stats.rounds = round + 1;
            let snapshot = self.consistent_point().await?;
            let t = Arc::clone(&self.tables);
            let e = Arc::clone(&exprs);
            let endpoint = self.endpoint.clone();
            let todo = ranges.clone();
            let throttle = Arc::clone(&self.throttle);
            let progress = Arc::clone(&self.progress);
            let cancel = self.cancel.clone();
            let mut task = tokio::spawn(async move {
                check(
                    endpoint, snapshot.0, snapshot.1, t, &e, todo, &throttle, &progress, &cancel,
                )
                .await
            });
            // keep applying while the checksum reads its snapshot
            let (chunks, differing) = loop {
                let until = tokio::time::Instant::now() + Duration::from_millis(100);
                self.follower.follow(None, until, true, self.cancel).await?;
                if task.is_finished() {
                    break (&mut task).await.map_err(|e| VerifyError::Sql {
                        what: "the checksum task",
                        reason: e.to_string(),
                    })??;
                }
            };
            if round == 0 {
                stats.chunks = chunks;
            }
            if differing.is_empty() {
                stats.ms = started.elapsed().as_millis() as u64;
                return Ok(stats);
            }
            let shown = describe(&names(&self.tables.key_orig), &differing);
            if round == MAX_ROUNDS {
                return Err(VerifyError::Persistent {
                    table: self.tables.orig_q(),
                    rounds: MAX_ROUNDS,
                    ranges: shown,
                });
            }
            tracing::warn!(
                "checksum: {} chunk(s) differ ({shown}); re-copying them",
                differing.len()
            );
            stats.repaired_chunks += differing.len() as u64;
            for (lo, hi) in &differing {
                let range = describe(
                    &names(&self.tables.key_orig),
                    std::slice::from_ref(&(lo.clone(), hi.clone())),
                );
                crate::copier::copy_chunk(
                    self.follower.conn(),
                    self.endpoint,
                    &self.tables,
                    lo.as_ref(),
                    hi.as_ref(),
                    &range,
                    // the applier is applying everywhere again: the repair must lock
                    crate::resync::Mode::Locking,
                    &self.progress,
                    self.cancel,
                )
                .await?;
            }
            ranges = Some(differing);
        }
        unreachable!("the loop returns on its last round")
    }

    /// Returns two sessions inside consistent snapshots taken, under the same lock, while the
    /// ghost was complete: one reads the original, the other the ghost, side by side.
    async fn consistent_point(&mut self) -> Result<(Conn, Conn), VerifyError> {
        let t = Arc::clone(&self.tables);
        for attempt in 1..=LOCK_ATTEMPTS {
            // catch up first, so the lock is short
            let token = write_sentinel(self.control, &t.db, &self.changelog)
                .await
                .map_err(sql("writing a sentinel"))?;
            self.follower
                .follow(
                    Some(&token),
                    tokio::time::Instant::now() + Duration::from_secs(60),
                    true,
                    self.cancel,
                )
                .await?;
            self.follower
                .flush(self.cancel)
                .await
                .map_err(FollowError::from)?;

            let secs = self.lock_timeout.as_secs().max(1);
            let mut lock = self
                .endpoint
                .connect_with(self.endpoint.opts(secs))
                .await
                .map_err(connecting)?;
            let mut snaps = Vec::with_capacity(2);
            for _ in 0..2 {
                snaps.push(self.endpoint.connect().await.map_err(connecting)?);
            }
            // READ first: while it waits it holds nobody up, and long readers do not block it;
            // but new write transactions pass a pending READ lock, so under a busy write load
            // it can starve (0.5-2.5 s measured here). A pending WRITE lock queues them, and is
            // granted as soon as the open transactions end: every other attempt takes it.
            let kind = if attempt % 2 == 1 { "READ" } else { "WRITE" };
            let asked = Instant::now();
            if let Err(e) = lock
                .query_drop(format!(
                    "LOCK /* zdm-ost */ TABLES {} {kind}, {} WRITE",
                    t.orig_q(),
                    t.ghost_q()
                ))
                .await
            {
                if server_code(&e) == Some(1205) {
                    tracing::warn!("checksum: the consistent-point lock ({kind} on the original) was not granted within {secs} s (attempt {attempt}); retrying");
                    let until = tokio::time::Instant::now()
                        + Duration::from_millis(500 * u64::from(attempt));
                    self.follower.follow(None, until, true, self.cancel).await?;
                    continue;
                }
                return Err(sql("locking the tables")(e));
            }
            let granted = Instant::now();
            let under = async {
                let token = write_sentinel(self.control, &t.db, &self.changelog)
                    .await
                    .map_err(sql("writing a sentinel"))?;
                let until =
                    tokio::time::Instant::now() + self.lock_timeout.max(Duration::from_secs(2));
                self.follower
                    .follow(Some(&token), until, false, self.cancel)
                    .await?;
                self.follower
                    .applier
                    .flush_under_table_lock(&mut lock, self.cancel)
                    .await
                    .map_err(FollowError::from)?;
                // both tables are locked: the two snapshots see the same state
                for snap in snaps.iter_mut() {
                    snap.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .await
                        .map_err(sql("opening the snapshot"))?;
                    snap.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                        .await
                        .map_err(sql("opening the snapshot"))?;
                }
                Ok::<(), VerifyError>(())
            }
            .await;
            let unlocked = lock.query_drop("UNLOCK TABLES").await;
            tracing::info!(
                "checksum: consistent point ({kind} lock on the original granted after {} ms, held {} ms)",
                (granted - asked).as_millis(),
                granted.elapsed().as_millis()
            );
            let _ = lock.disconnect().await;
            under?;
            unlocked.map_err(sql("unlocking"))?;
            let ghost_side = snaps.pop().expect("two snapshots");
            let orig_side = snaps.pop().expect("two snapshots");
            return Ok((orig_side, ghost_side));
        }
        Err(VerifyError::Lock(LOCK_ATTEMPTS))
    }
}

/// Checksums the given ranges (or the whole table, in chunks) inside the snapshots, the
/// original on `s` and the ghost on `g` at the same time. Returns the number of chunks checked
/// and the ones that differ.
///
/// The whole table's chunks come from [`find_chunks`] on a session of its own, running ahead:
/// walking the key to its 200 boundaries took a fifth of a 1M-row checksum when it ran first.
#[allow(clippy::too_many_arguments)]
async fn check(
    endpoint: Endpoint,
    mut s: Conn,
    mut g: Conn,
    t: Arc<Tables>,
    exprs: &(String, String),
    ranges: Option<Vec<Range>>,
    throttle: &crate::throttle::Throttle,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<(u64, Vec<Range>), VerifyError> {
    use std::sync::atomic::Ordering::Relaxed;
    progress.checked_chunks.store(0, Relaxed);
    progress.checksum_chunks.store(0, Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Range>(FINDER_AHEAD);
    let finder = match ranges {
        Some(r) => {
            progress.checksum_chunks.store(r.len() as u64, Relaxed);
            tokio::spawn(async move {
                for range in r {
                    if tx.send(range).await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        }
        None => {
            let finder_t = Arc::clone(&t);
            let finder_progress = Arc::clone(progress);
            tokio::spawn(
                async move { find_chunks(&endpoint, &finder_t, &finder_progress, tx).await },
            )
        }
    };
    let mut checked = 0u64;
    let mut differing = Vec::new();
    let checking = async {
        while let Some((lo, hi)) = rx.recv().await {
            if !throttle.wait_soft(cancel).await {
                return Err(VerifyError::Follow(FollowError::Apply(
                    crate::apply::ApplyError::Cancelled,
                )));
            }
            let (op, pp) = range_predicate(&t.key_orig, lo.as_ref(), hi.as_ref());
            let (gp, gpp) = range_predicate(&t.key_ghost, lo.as_ref(), hi.as_ref());
            let orig_sql = format!(
                "SELECT /* zdm-ost */ {} FROM {} WHERE {op}",
                exprs.0,
                t.orig_q()
            );
            let ghost_sql = format!(
                "SELECT /* zdm-ost */ {} FROM {} WHERE {gp}",
                exprs.1,
                t.ghost_q()
            );
            let (a, b) = tokio::join!(
                s.exec_first::<(u64, u64), _, _>(orig_sql, pp),
                g.exec_first::<(u64, u64), _, _>(ghost_sql, gpp)
            );
            let a = a.map_err(sql("checksumming the original"))?;
            let b = b.map_err(sql("checksumming the ghost"))?;
            if a != b {
                differing.push((lo, hi));
            }
            checked += 1;
            progress.checked_chunks.fetch_add(1, Relaxed);
        }
        Ok(())
    };
    let checked_all = checking.await;
    // the finder stops at its next send once the receiver is gone
    drop(rx);
    let found = finder.await.map_err(|e| VerifyError::Sql {
        what: "the checksum's chunk finder",
        reason: e.to_string(),
    });
    for mut c in [s, g] {
        let _ = c.query_drop("COMMIT").await;
        let _ = c.disconnect().await;
    }
    checked_all?;
    found??;
    Ok((checked, differing))
}

/// Chunks of the checksum the finder may be ahead of it.
const FINDER_AHEAD: usize = 64;

/// Sends the chunks of the original's key, in order, to `tx`: `(-inf, k1], (k1, k2], ...,
/// (kn, +inf)`. Outside any snapshot: the boundaries only split the key space, and the ranges
/// cover all of it whatever rows come and go meanwhile. Sets the progress's chunk total when
/// the last one is found.
async fn find_chunks(
    endpoint: &Endpoint,
    t: &Tables,
    progress: &Progress,
    tx: tokio::sync::mpsc::Sender<Range>,
) -> Result<(), VerifyError> {
    let mut conn = endpoint.connect().await.map_err(connecting)?;
    let found = find_chunks_on(&mut conn, t, progress, tx).await;
    let _ = conn.disconnect().await;
    found
}

async fn find_chunks_on(
    conn: &mut Conn,
    t: &Tables,
    progress: &Progress,
    tx: tokio::sync::mpsc::Sender<Range>,
) -> Result<(), VerifyError> {
    let mut prev: Option<Key> = None;
    let mut found = 0u64;
    loop {
        let hi = t
            .key_after(conn, prev.as_ref(), None, CHUNK)
            .await
            .map_err(sql("finding checksum chunks"))?;
        let last = hi.is_none();
        found += 1;
        if last {
            progress
                .checksum_chunks
                .store(found, std::sync::atomic::Ordering::Relaxed);
        }
        if tx.send((prev, hi.clone())).await.is_err() {
            // the checksum stopped
            return Ok(());
        }
        if last {
            return Ok(());
        }
        prev = hi;
    }
}

fn describe(cols: &[String], ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|(lo, hi)| display_range(cols, lo.as_ref(), hi.as_ref()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_follow_the_new_column_type() {
        assert_eq!(
            cast("`a`", "bigint(20) unsigned", None),
            "CAST(`a` AS UNSIGNED)"
        );
        assert_eq!(cast("`a`", "int(11)", None), "CAST(`a` AS SIGNED)");
        assert_eq!(
            cast("`d`", "decimal(12,3)", None),
            "CAST(`d` AS DECIMAL(12,3))"
        );
        assert_eq!(cast("`t`", "datetime(6)", None), "CAST(`t` AS DATETIME(6))");
        assert_eq!(cast("`f`", "float", None), "CAST(`f` AS FLOAT)");
        assert_eq!(cast("`f`", "double", None), "CAST(`f` AS DOUBLE)");
        assert_eq!(cast("`t`", "time(3)", None), "CAST(`t` AS TIME(3))");
        assert_eq!(
            cast("`s`", "varchar(10)", Some("utf8mb4")),
            "CONVERT(`s` USING utf8mb4)"
        );
        assert_eq!(cast("`b`", "blob", None), "CAST(`b` AS BINARY)");
        assert_eq!(cast("`b`", "bit(10)", None), "CAST(`b` AS UNSIGNED)");
    }
}
