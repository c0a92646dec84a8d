//! The cut-over: swap the ghost in for the original with one atomic RENAME, while writes stall
//! for milliseconds and never fail.
//!
//! Before any lock: **catch up** (sentinel, apply until the stream has read it, flush the key
//! set empty) so that under the lock only the last milliseconds of changes remain; and **look
//! before locking**: sessions holding a metadata lock on the table (an open transaction that
//! touched it) would make the lock wait, so wait for them first, bounded, naming them.
//!
//! MariaDB refuses RENAME under LOCK TABLES (1192), so there the sentry protocol runs, with
//! helper names that sort after the table name (`<t>_zdm_gho`, `<t>_zdm_old`):
//! 1. session A creates the sentry `<t>_zdm_old` and takes `LOCK TABLES <t> WRITE,
//!    <t>_zdm_gho WRITE, <t>_zdm_old WRITE` under a short `lock_wait_timeout`;
//! 2. a sentinel written from another session proves the stream has read every change made
//!    before the lock;
//! 3. session B issues `RENAME TABLE <t> TO <t>_zdm_old, <t>_zdm_gho TO <t>`, and blocks;
//! 4. A confirms B waits for the metadata lock: since `<t>` sorts first, B is queued on `<t>`
//!    itself, ahead of every application write queued there;
//! 5. A applies the remaining keys (autocommit statements only: a transaction would release
//!    LOCK TABLES), copies AUTO_INCREMENT onto the ghost, drops the sentry, unlocks;
//! 6. B's pending exclusive lock is granted before the queued writes, which then land in the
//!    new table.
//!
//! Why no write is lost if a session dies at any step: before A drops the sentry, B's RENAME
//! cannot succeed (its target exists), so if A dies its locks go and B fails: nothing renamed.
//! If B dies, nothing was renamed: A releases and the attempt is retried. Once A has dropped
//! the sentry, every change made before the lock is in the ghost (step 5 came first), and no
//! write to `<t>` can happen between A's unlock and B's rename (B is first in the queue).
//!
//! On MySQL 8.0.13+ A renames under its own LOCK TABLES instead; the rest is the same.
//!
//! The binlog stream is stopped under the lock, after the last flush: once the tables are
//! swapped, events for `<t>` describe the new table. If the attempt then fails, the stream is
//! restarted from the position read under the lock (no write to `<t>` happened in between).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::{FollowError, Follower};
use crate::binlog::{BinlogPos, StreamTask};
use crate::changelog::write_sentinel;
use crate::conn::{Endpoint, Flavor, ServerInfo};
use crate::resync::Tables;
use crate::sql::{qualified, server_code, server_message};

/// How long B waits for A before giving up on its RENAME.
const RENAME_WAIT: Duration = Duration::from_secs(30);
/// Catch-up rounds before taking the lock anyway.
const CATCH_UP_ROUNDS: u32 = 20;
/// Keys left after a catch-up round that count as "caught up".
const CAUGHT_UP_KEYS: u64 = 1000;

#[derive(Debug, Clone)]
pub struct CutoverOptions {
    pub lock_timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CutoverStats {
    pub attempts: u32,
    pub catch_up_ms: u64,
    pub lock_held_ms: u64,
    pub keys_under_lock: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("cut-over: gave up after {attempts} attempts; the last failed with: {last}. Nothing was renamed; the original table is untouched. Retry later, or raise --cut-over-retries / --cut-over-lock-timeout-seconds")]
    GaveUp { attempts: u32, last: String },
    #[error("cut-over: table {name} exists, and zdm-ost did not create it: it needs that name for the old table. Rename or drop it, and run the migration again")]
    OldExists { name: String },
    #[error("cut-over: {0}")]
    Follow(#[from] FollowError),
    #[error("cut-over: {what}: {reason}")]
    Sql { what: &'static str, reason: String },
    #[error("cut-over: the RENAME reported success but the tables are not as expected: {0}. Check the tables by hand before anything else writes to them")]
    Verify(String),
    #[error("cancelled")]
    Cancelled,
}

fn sql(what: &'static str) -> impl Fn(mysql_async::Error) -> CutoverError {
    move |e| CutoverError::Sql {
        what,
        reason: server_message(&e),
    }
}

/// Everything the cut-over works with.
pub struct Cutover<'a> {
    pub endpoint: &'a Endpoint,
    pub server: &'a ServerInfo,
    pub tables: Arc<Tables>,
    pub old: String,
    pub changelog: String,
    /// Column names the new table must have after the swap (the ghost's).
    pub expected_columns: Vec<String>,
    /// The ALTER's own `AUTO_INCREMENT = n`, which the new table gets instead of the
    /// original's counter (the server raises it past the largest id, as a native ALTER does).
    pub auto_increment: Option<u64>,
    pub control: &'a mut Conn,
    pub follower: &'a mut Follower,
    pub stream: &'a mut StreamTask,
    pub opts: CutoverOptions,
    pub cancel: &'a CancellationToken,
    pub throttle: Arc<crate::throttle::Throttle>,
    pub progress: Arc<crate::progress::Progress>,
    pub state: CutoverState,
}

/// Bookkeeping across attempts; starts as `Default`.
#[derive(Debug, Default)]
pub struct CutoverState {
    stream_stopped: bool,
    stream_restart_pos: Option<BinlogPos>,
}

enum Attempt {
    Done(CutoverStats),
    Retry(String),
}

impl Cutover<'_> {
    pub async fn run(mut self) -> Result<CutoverStats, CutoverError> {
        let mut last = String::new();
        for attempt in 1..=self.opts.retries.max(1) {
            if self.cancel.is_cancelled() {
                return Err(CutoverError::Cancelled);
            }
            match self.attempt().await? {
                Attempt::Done(mut stats) => {
                    stats.attempts = attempt;
                    return Ok(stats);
                }
                Attempt::Retry(reason) => {
                    let pause = Duration::from_millis(500 * u64::from(attempt))
                        .min(Duration::from_secs(10));
                    tracing::warn!(
                        "cut-over attempt {attempt} of {} did not go through ({reason}); writers were released; retrying in {} ms",
                        self.opts.retries,
                        pause.as_millis()
                    );
                    last = reason;
                    // keep applying while waiting, so the next catch-up is short
                    let until = tokio::time::Instant::now() + pause;
                    self.follower.follow(None, until, true, self.cancel).await?;
                }
            }
        }
        Err(CutoverError::GaveUp {
            attempts: self.opts.retries.max(1),
            last,
        })
    }

    fn mariadb_sentry(&self) -> bool {
        !(self.server.flavor == Flavor::MySql && self.server.version >= (8, 0, 13))
    }

    async fn catch_up(&mut self) -> Result<(), CutoverError> {
        let t = &self.tables;
        for _ in 0..CATCH_UP_ROUNDS {
            let token = write_sentinel(self.control, &t.db, &self.changelog)
                .await
                .map_err(sql("writing a sentinel"))?;
            let until = tokio::time::Instant::now() + Duration::from_secs(60);
            self.follower
                .follow(Some(&token), until, true, self.cancel)
                .await?;
            let flushed = self
                .follower
                .flush(self.cancel)
                .await
                .map_err(FollowError::from)?;
            if flushed <= CAUGHT_UP_KEYS {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Waits (bounded) while other sessions hold a metadata lock on the table and have been in
    /// their current statement, or idle in their transaction, for a second or more. Younger
    /// holders are a busy application's short transactions: they end by themselves, and waiting
    /// for the table to be free of them would only spend the whole bound.
    async fn wait_for_lock_holders(&mut self) -> Result<(), CutoverError> {
        let t = &self.tables;
        let query = match self.server.flavor {
            Flavor::MariaDb => "SELECT /* zdm-ost */ p.ID, p.USER, p.TIME, p.COMMAND, p.INFO \
                 FROM information_schema.METADATA_LOCK_INFO m JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID \
                 WHERE m.TABLE_SCHEMA = ? AND m.TABLE_NAME = ? AND m.THREAD_ID <> CONNECTION_ID() AND p.TIME_MS >= 1000",
            Flavor::MySql => "SELECT /* zdm-ost */ t.PROCESSLIST_ID, t.PROCESSLIST_USER, t.PROCESSLIST_TIME, t.PROCESSLIST_COMMAND, t.PROCESSLIST_INFO \
                 FROM performance_schema.metadata_locks m JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID \
                 WHERE m.OBJECT_TYPE = 'TABLE' AND m.OBJECT_SCHEMA = ? AND m.OBJECT_NAME = ? AND t.PROCESSLIST_ID <> CONNECTION_ID() AND t.PROCESSLIST_TIME >= 1",
        };
        let bound = (self.opts.lock_timeout * 2).max(Duration::from_secs(2));
        let started = Instant::now();
        let mut reported = false;
        loop {
            type Holder = (
                u64,
                Option<String>,
                Option<i64>,
                Option<String>,
                Option<String>,
            );
            let holders: Vec<Holder> = match self.control.exec(query, (&t.db, &t.orig)).await {
                Ok(h) => h,
                // the lock table is not available (plugin not loaded, no privilege): just try the lock
                Err(_) => return Ok(()),
            };
            if holders.is_empty() {
                return Ok(());
            }
            if !reported {
                for (id, user, time, command, info) in &holders {
                    tracing::warn!(
                        "before locking: session {id} (user {}, {} {} s: {}) holds a lock on {}; waiting up to {} ms for it to finish",
                        user.as_deref().unwrap_or("?"),
                        command.as_deref().unwrap_or("?"),
                        time.unwrap_or(0),
                        info.as_deref().unwrap_or("idle in transaction"),
                        t.orig_q(),
                        bound.as_millis()
                    );
                }
                reported = true;
            }
            if started.elapsed() >= bound {
                return Ok(());
            }
            // keep applying while we wait
            let until = tokio::time::Instant::now() + Duration::from_millis(100);
            self.follower.follow(None, until, true, self.cancel).await?;
        }
    }

    async fn attempt(&mut self) -> Result<Attempt, CutoverError> {
        let t = Arc::clone(&self.tables);
        // never start a cut-over while throttled (lag, load, operator): keep applying instead
        let mut said = false;
        while self.throttle.is_throttled() {
            if !said {
                tracing::info!(
                    "cut-over waits: {}",
                    self.throttle.reason().unwrap_or_default()
                );
                said = true;
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(100);
            self.follower.follow(None, until, true, self.cancel).await?;
        }
        self.progress
            .cutover_attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let catch_up_started = Instant::now();
        self.catch_up().await?;
        self.wait_for_lock_holders().await?;
        let catch_up_ms = catch_up_started.elapsed().as_millis() as u64;

        let lock_secs = self.opts.lock_timeout.as_secs().max(1);
        let mut a = self
            .endpoint
            .connect_with(self.endpoint.opts(lock_secs))
            .await
            .map_err(|e| CutoverError::Sql {
                what: "connecting the locking session",
                reason: e.to_string(),
            })?;
        let old_q = qualified(&t.db, &self.old);
        let sentry = self.mariadb_sentry();
        if sentry {
            match a
                .query_drop(format!(
                    "CREATE /* zdm-ost */ TABLE {old_q} (zdm_sentry INT) ENGINE=InnoDB COMMENT='{SENTRY_COMMENT}'"
                ))
                .await
            {
                Ok(()) => {}
                Err(e) if server_code(&e) == Some(1050) => return Err(CutoverError::OldExists { name: old_q }),
                Err(e) => return Err(sql("creating the sentry table")(e)),
            }
        }
        let lock_list = if sentry {
            format!("{} WRITE, {} WRITE, {old_q} WRITE", t.orig_q(), t.ghost_q())
        } else {
            format!("{} WRITE, {} WRITE", t.orig_q(), t.ghost_q())
        };
        let lock_started = Instant::now();
        if let Err(e) = a
            .query_drop(format!("LOCK /* zdm-ost */ TABLES {lock_list}"))
            .await
        {
            if sentry {
                let _ = a
                    .query_drop(format!("DROP /* zdm-ost */ TABLE IF EXISTS {old_q}"))
                    .await;
            }
            return match server_code(&e) {
                Some(1205) => Ok(Attempt::Retry(format!(
                    "the table lock was not granted within {lock_secs} s (another session holds a lock on the table)"
                ))),
                _ => Err(sql("locking the tables")(e)),
            };
        }
        tracing::info!("cut-over: {} locked", t.orig_q());

        let result = self.under_lock(&mut a, sentry, &old_q, lock_started).await;
        match result {
            Ok(mut stats) => {
                stats.catch_up_ms = catch_up_ms;
                self.verify().await?;
                Ok(Attempt::Done(stats))
            }
            Err(Abort::Retry(reason, b)) => {
                release(&mut a, b, sentry, &old_q).await;
                self.restart_stream_if_stopped().await?;
                Ok(Attempt::Retry(reason))
            }
            Err(Abort::Fatal(e, b)) => {
                release(&mut a, b, sentry, &old_q).await;
                Err(e)
            }
        }
    }

    async fn under_lock(
        &mut self,
        a: &mut Conn,
        sentry: bool,
        old_q: &str,
        lock_started: Instant,
    ) -> Result<CutoverStats, Abort> {
        let t = Arc::clone(&self.tables);
        // 2. every change made before the lock has been read
        let token = write_sentinel(self.control, &t.db, &self.changelog)
            .await
            .map_err(|e| Abort::Fatal(sql("writing a sentinel")(e), None))?;
        let until =
            tokio::time::Instant::now() + self.opts.lock_timeout.max(Duration::from_secs(2));
        match self
            .follower
            .follow(Some(&token), until, false, self.cancel)
            .await
        {
            Ok(()) => {}
            Err(FollowError::SentinelTimeout { .. }) => {
                return Err(Abort::Retry(
                    "the binlog stream did not catch up under the lock in time".into(),
                    None,
                ))
            }
            Err(e) => return Err(Abort::Fatal(e.into(), None)),
        }
        let pos_under_lock = BinlogPos::current(self.control)
            .await
            .map_err(|e| Abort::Fatal(sql("reading the binlog position")(e), None))?;
        self.state.stream_restart_pos = Some(pos_under_lock);

        // 3./4. queue the RENAME and confirm it waits on the table
        let rename = format!(
            "RENAME /* zdm-ost */ TABLE {} TO {old_q}, {} TO {}",
            t.orig_q(),
            t.ghost_q(),
            t.orig_q()
        );
        let mut b_handle = None;
        if sentry {
            let mut b = self
                .endpoint
                .connect_with(self.endpoint.opts(RENAME_WAIT.as_secs()))
                .await
                .map_err(|e| Abort::Retry(format!("connecting the rename session: {e}"), None))?;
            let b_id = b.id();
            let rename_b = rename.clone();
            let handle = tokio::spawn(async move {
                let r = b.query_drop(rename_b).await;
                let _ = b.disconnect().await;
                r
            });
            let queued_by = Instant::now() + self.opts.lock_timeout.max(Duration::from_secs(2));
            loop {
                let state: Option<Option<String>> = self
                    .control
                    .exec_first("SELECT /* zdm-ost */ STATE FROM information_schema.PROCESSLIST WHERE ID = ?", (b_id,))
                    .await
                    .map_err(|e| Abort::Retry(server_message(&e), None))?;
                if state.flatten().as_deref() == Some("Waiting for table metadata lock") {
                    break;
                }
                if handle.is_finished() || Instant::now() >= queued_by {
                    return Err(Abort::Retry(
                        "the RENAME session did not queue on the table lock".into(),
                        Some(handle),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            b_handle = Some(handle);
        }
        crate::failpoint::hit("cut-over-locked").await;

        // 5. the last keys, in the locking session, autocommit statements only
        let keys = self.follower.applier.backlog() as u64;
        if let Err(e) = self
            .follower
            .applier
            .flush_under_table_lock(a, self.cancel)
            .await
        {
            return Err(Abort::Fatal(CutoverError::Follow(e.into()), b_handle));
        }
        // no more reading: after the swap, events for the table describe the new one
        if let Err(e) = self.stream.stop().await {
            return Err(Abort::Fatal(
                CutoverError::Sql {
                    what: "stopping the binlog stream",
                    reason: e.to_string(),
                },
                b_handle,
            ));
        }
        self.state.stream_stopped = true;
        // the ghost's counter must not hand out ids the original already used, unless the
        // ALTER sets it; a failed read is a failed attempt, never a skipped step
        let ai: Option<u64> = match self.auto_increment {
            Some(n) => Some(n),
            None => match a
                .exec_first::<Option<u64>, _, _>(
                    "SELECT /* zdm-ost */ AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&t.db, &t.orig),
                )
                .await
            {
                Ok(n) => n.flatten(),
                Err(e) => {
                    return Err(Abort::Retry(
                        format!("reading the AUTO_INCREMENT of {}: {}", t.orig_q(), server_message(&e)),
                        b_handle,
                    ))
                }
            },
        };
        if let Some(n) = ai {
            if let Err(e) = a
                .query_drop(format!(
                    "ALTER /* zdm-ost */ TABLE {} AUTO_INCREMENT = {n}",
                    t.ghost_q()
                ))
                .await
            {
                return Err(Abort::Fatal(
                    sql("copying AUTO_INCREMENT to the ghost")(e),
                    b_handle,
                ));
            }
        }

        let lock_held;
        if sentry {
            // 5./6. release: drop the sentry, unlock; B's RENAME goes first
            if let Err(e) = a
                .query_drop(format!("DROP /* zdm-ost */ TABLE {old_q}"))
                .await
            {
                return Err(Abort::Fatal(sql("dropping the sentry")(e), b_handle));
            }
            let unlocked = a.query_drop("UNLOCK TABLES").await;
            lock_held = lock_started.elapsed();
            unlocked.map_err(|e| Abort::Fatal(sql("unlocking")(e), None))?;
            let b = b_handle.take().expect("the rename session was started");
            match tokio::time::timeout(RENAME_WAIT, b).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    return Err(Abort::Retry(
                        format!("the RENAME failed: {}", server_message(&e)),
                        None,
                    ));
                }
                Ok(Err(join)) => {
                    return Err(Abort::Retry(
                        format!("the rename session crashed: {join}"),
                        None,
                    ))
                }
                Err(_) => {
                    return Err(Abort::Retry(
                        "the RENAME did not finish in time".into(),
                        None,
                    ))
                }
            }
        } else {
            let renamed = a.query_drop(&rename).await;
            let unlocked = a.query_drop("UNLOCK TABLES").await;
            lock_held = lock_started.elapsed();
            renamed.map_err(|e| {
                Abort::Retry(format!("the RENAME failed: {}", server_message(&e)), None)
            })?;
            unlocked.map_err(|e| Abort::Fatal(sql("unlocking")(e), None))?;
        }
        self.progress.cutover_lock_ms.store(
            lock_held.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(
            "cut-over: tables swapped; lock held {} ms, {keys} keys applied under it",
            lock_held.as_millis()
        );
        Ok(CutoverStats {
            attempts: 0,
            catch_up_ms: 0,
            lock_held_ms: lock_held.as_millis() as u64,
            keys_under_lock: keys,
        })
    }

    async fn restart_stream_if_stopped(&mut self) -> Result<(), CutoverError> {
        if self.state.stream_stopped {
            let pos = self
                .state
                .stream_restart_pos
                .clone()
                .ok_or_else(|| CutoverError::Sql {
                    what: "restarting the binlog stream",
                    reason: "no position recorded under the lock".into(),
                })?;
            tracing::info!("restarting the binlog stream at {pos}");
            self.follower.rx = self.stream.restart(pos);
            self.state.stream_stopped = false;
        }
        Ok(())
    }

    /// After the swap: `<t>` has the new columns, the old table is `<t>_zdm_old`, no ghost.
    async fn verify(&mut self) -> Result<(), CutoverError> {
        let t = &self.tables;
        let names: Vec<String> = self
            .control
            .exec(
                "SELECT /* zdm-ost */ TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?, ?, ?) ORDER BY TABLE_NAME",
                (&t.db, &t.orig, &t.ghost, &self.old),
            )
            .await
            .map_err(sql("verifying the table names"))?;
        let mut expected = vec![t.orig.clone(), self.old.clone()];
        expected.sort();
        if names != expected {
            return Err(CutoverError::Verify(format!(
                "found tables {names:?}, expected {expected:?}"
            )));
        }
        let cols: Vec<String> = self
            .control
            .exec(
                "SELECT /* zdm-ost */ COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&t.db, &t.orig),
            )
            .await
            .map_err(sql("verifying the new table's columns"))?;
        if cols != self.expected_columns {
            return Err(CutoverError::Verify(format!(
                "{} has columns {cols:?}, expected {:?}",
                t.orig_q(),
                self.expected_columns
            )));
        }
        Ok(())
    }
}

/// Gives up an attempt: unlock with the sentry still in place (so a queued RENAME fails
/// safely), wait for the RENAME session to end, then drop the sentry.
async fn release(a: &mut Conn, b: Option<RenameHandle>, sentry: bool, old_q: &str) {
    let _ = a.query_drop("UNLOCK TABLES").await;
    if let Some(b) = b {
        let _ = tokio::time::timeout(RENAME_WAIT, b).await;
    }
    if sentry {
        let _ = a
            .query_drop(format!("DROP /* zdm-ost */ TABLE IF EXISTS {old_q}"))
            .await;
    }
}

/// The comment that marks a sentry table as zdm-ost's own (and so safe to drop).
pub const SENTRY_COMMENT: &str = "zdm-ost cut-over sentry";

type RenameHandle = tokio::task::JoinHandle<Result<(), mysql_async::Error>>;

enum Abort {
    Retry(String, Option<RenameHandle>),
    Fatal(CutoverError, Option<RenameHandle>),
}
