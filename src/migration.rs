//! The orchestrator: one state machine from inspection to clean-up, and the only place that
//! decides to abort.
//!
//! `Inspecting -> Planned -> Expanded -> Copying -> Verifying -> [Indexing] -> CuttingOver ->
//! Done` (`Indexing` when secondary indexes are built after the copy; `Failed` from anywhere). The binlog stream is started, at a position read from the server, and proven live
//! with a sentinel **before** the copier reads its first chunk (the apply correctness argument
//! in `apply.rs` rests on that order).
//!
//! Abort: any error, Ctrl-C or SIGTERM before the rename stops every task and drops the ghost
//! and changelog tables (and the cut-over sentry, only if it carries zdm-ost's comment); the
//! original table is never written by zdm-ost, only read, so it is untouched. After a SIGKILL
//! the helper tables stay behind; `--initially-drop-ghost-table` clears them on the next run.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, FollowError, Follower, Frontier};
use crate::binlog::{BinlogPos, StreamSpec, StreamTask};
use crate::changelog;
use crate::checkpoint::{self, Checkpoint};
use crate::cli::Config;
use crate::control::Control;
use crate::copier::{self, CopyOptions};
use crate::cutover::{Cutover, CutoverOptions, CutoverState, CutoverStats};
use crate::ddl::{parse_alter, TableNames};
use crate::error::Error;
use crate::hooks::Hooks;
use crate::inspect::TableInfo;
use crate::key::KeyColumn;
use crate::leftovers::{acquire_run_lock, check_resumable, drop_helpers};
use crate::plan::{self, Plan};
use crate::progress::{Phase, Progress};
use crate::resync::Tables;
use crate::sql::{qualified, server_code, server_message};
use crate::throttle::{Monitor, Throttle, ThrottleSettings};
use crate::verify::{Verify, VerifyStats};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `--execute`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub replica_server_id: Option<u32>,
    pub chunk_size: u64,
    pub chunk_time: Duration,
    pub cut_over_lock_timeout: Duration,
    pub cut_over_retries: u32,
    pub ok_to_drop_table: bool,
    pub initially_drop_ghost_table: bool,
    pub status_interval: Duration,
    pub resume: bool,
    pub skip_checksum: bool,
    pub throttle: ThrottleSettings,
    /// The control socket; `None`: the default path.
    pub socket: Option<PathBuf>,
    pub tcp_port: Option<u16>,
    pub hooks_path: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    /// Show a progress bar instead of status lines (stderr is a terminal).
    pub progress_bar: bool,
    /// Run an INSTANT-class change natively instead of copying.
    pub attempt_instant_ddl: bool,
    /// Copy workers.
    pub threads: usize,
    /// Flush workers of the applier.
    pub apply_threads: usize,
}

/// What a finished migration reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub database: String,
    pub table: String,
    pub alter: String,
    /// "copy" (ghost table and cut-over) or "instant" (a native metadata-only ALTER).
    pub path: &'static str,
    pub copied_rows: u64,
    pub applied_changes: u64,
    /// The most changed keys ever waiting to be applied at once.
    pub max_backlog: u64,
    pub copy_ms: u64,
    /// Time spent building the secondary indexes left out of the copy (`--defer-indexes`).
    pub index_ms: Option<u64>,
    /// `None` with --skip-checksum.
    pub checksum: Option<VerifyStats>,
    pub cut_over: CutoverStats,
    pub total_ms: u64,
    /// The old table, if kept.
    pub old_table: Option<String>,
    /// Times a write on the server waited for room in InnoDB's redo log buffer during the run
    /// (`Innodb_log_waits`, the whole server's), when it could be read.
    pub log_waits: Option<u64>,
}

impl Summary {
    pub fn render(&self) -> String {
        if self.path == "instant" {
            return format!(
                "zdm-ost: changed {} in {:.3} s with a native ALGORITHM=INSTANT ALTER (metadata only: no copy, no cut-over)\n",
                qualified(&self.database, &self.table),
                self.total_ms as f64 / 1000.0
            );
        }
        format!(
            "zdm-ost: migrated {} in {:.1} s: {} rows copied in {:.1} s{}, {} changes applied; {}; \
             cut-over after {} attempt(s): catch-up {} ms, lock held {} ms ({} keys applied under it); {}\n",
            qualified(&self.database, &self.table),
            self.total_ms as f64 / 1000.0,
            self.copied_rows,
            self.copy_ms as f64 / 1000.0,
            match self.index_ms {
                Some(ms) => format!(", secondary indexes built in {:.1} s", ms as f64 / 1000.0),
                None => String::new(),
            },
            self.applied_changes,
            match &self.checksum {
                Some(c) => format!(
                    "checksum equal over {} chunks in {:.1} s ({} chunk(s) repaired)",
                    c.chunks,
                    c.ms as f64 / 1000.0,
                    c.repaired_chunks
                ),
                None => "checksum SKIPPED (--skip-checksum)".into(),
            },
            self.cut_over.attempts,
            self.cut_over.catch_up_ms,
            self.cut_over.lock_held_ms,
            self.cut_over.keys_under_lock,
            match &self.old_table {
                Some(t) => format!("old table kept as {t}"),
                None => "old table dropped (--ok-to-drop-table)".into(),
            }
        )
    }
}

/// Runs the migration. The plan is handed to `on_plan` as soon as it exists (for printing).
pub async fn execute(
    cfg: &Config,
    opts: &ExecOptions,
    cancel: &CancellationToken,
    on_plan: impl FnOnce(&Plan),
) -> Result<Summary, Error> {
    let names = TableNames::new(&cfg.table)?;
    let spec = parse_alter(&cfg.alter, &cfg.table)?;
    let db = &cfg.database;
    let mut conn = cfg.primary.connect().await?;
    acquire_run_lock(&mut conn, db, &names.original).await?;
    if opts.initially_drop_ghost_table {
        drop_helpers(&mut conn, db, &names, true).await?;
    }
    let resume = if opts.resume {
        Some(check_resumable(&mut conn, db, &names, &spec.body).await?)
    } else {
        None
    };
    let progress = Arc::new(Progress::default());
    let throttle = Throttle::new(opts.throttle.clone(), Arc::clone(&progress));
    let hooks = Hooks {
        dir: opts.hooks_path.clone(),
        env: vec![
            ("ZDM_HOST".into(), cfg.primary.host.clone()),
            ("ZDM_PORT".into(), cfg.primary.port.to_string()),
            ("ZDM_DATABASE".into(), db.clone()),
            ("ZDM_TABLE".into(), names.original.clone()),
            ("ZDM_GHOST_TABLE".into(), names.ghost.clone()),
            ("ZDM_OLD_TABLE".into(), names.old.clone()),
            ("ZDM_ALTER".into(), spec.body.clone()),
        ],
        progress: Arc::clone(&progress),
    };
    hooks.notify("on-startup", &[]).await;
    let plan = plan::prepare(&mut conn, cfg, &names, &spec, resume.is_some(), cancel).await?;
    progress.set_phase(Phase::Planned);
    on_plan(&plan);
    hooks.notify("on-validated", &[]).await;

    if opts.attempt_instant_ddl && plan.algorithm == plan::Algorithm::Instant && resume.is_none() {
        match instant(&mut conn, db, &names, &plan, opts).await {
            Ok(summary) => {
                progress.set_phase(Phase::Done);
                hooks.notify("on-success", &[]).await;
                return Ok(summary);
            }
            Err(why) => tracing::warn!(
                "the native INSTANT ALTER did not go through ({why}); copying the table instead"
            ),
        }
    }

    let run = Run {
        cfg,
        opts,
        plan: &plan,
        names: &names,
        progress: Arc::clone(&progress),
        cancel: cancel.child_token(),
        resume,
        throttle: Arc::clone(&throttle),
        hooks: hooks.clone(),
    };
    // operator services, for the whole run
    let services = CancellationToken::new();
    let control = Control {
        throttle: Arc::clone(&throttle),
        progress: Arc::clone(&progress),
        cancel: run.cancel.clone(),
    };
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| crate::control::default_socket(db, &names.original));
    let control_task = tokio::spawn(control.serve(socket, opts.tcp_port, services.clone()));
    let metrics_task = opts.metrics_addr.map(|addr| {
        tokio::spawn(crate::metrics::serve(
            addr,
            Arc::clone(&progress),
            Arc::clone(&throttle),
            services.clone(),
        ))
    });
    let bar = opts
        .progress_bar
        .then(|| spawn_progress_bar(Arc::clone(&progress), services.clone()));
    let ticker = spawn_status_ticker(
        Arc::clone(&progress),
        hooks.clone(),
        opts.status_interval,
        !opts.progress_bar,
        services.clone(),
    );
    let mut result = run.run(&mut conn).await;
    // Asked to stop (signal, panic, critical load)? Then whichever task noticed first, and
    // whatever it reported ("stream stopped", ...), the cause is the request to stop.
    let asked_to_stop = run.cancel.is_cancelled();
    services.cancel();
    for t in [Some(control_task), metrics_task].into_iter().flatten() {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), t).await {
            tracing::warn!("control or metrics endpoint failed: {e}");
        }
    }
    if let Some(b) = bar {
        let _ = b.await;
    }
    let _ = ticker.await;
    if result.is_err() && asked_to_stop {
        result = Err(match throttle.abort_reason() {
            Some(reason) => Error::Aborted(reason),
            None => Error::Cancelled,
        });
    }
    // The main connection holds the run lock. Lost, the lock may be another run's by now:
    // nothing is dropped then, and the ghost and checkpoint stay for --resume.
    let main_lost = result.is_err() && conn.ping().await.is_err();
    if let Some(e) = result
        .as_ref()
        .err()
        .filter(|e| e.keeps_checkpoint() || main_lost)
    {
        progress.set_phase(Phase::Failed);
        tracing::error!(
            "migration interrupted: {e}{}. The ghost table and checkpoint are kept: run the same command with --resume to continue",
            if main_lost {
                " (the connection holding the run lock was lost)"
            } else {
                ""
            }
        );
    } else if let Err(e) = &result {
        progress.set_phase(Phase::Failed);
        tracing::error!("migration failed: {e}; cleaning up");
        run.cancel.cancel();
        let cleaned = match cfg.primary.connect().await {
            Ok(mut c) => drop_helpers(&mut c, &cfg.database, &names, false).await,
            Err(e) => Err(e.into()),
        };
        if let Err(c) = cleaned {
            tracing::error!(
                "could not drop the helper tables ({c}); drop {} and {} by hand, or rerun with --initially-drop-ghost-table",
                qualified(&cfg.database, &names.ghost),
                qualified(&cfg.database, &names.changelog)
            );
        } else {
            tracing::info!(
                "dropped the ghost and changelog tables; {} is untouched",
                qualified(&cfg.database, &names.original)
            );
        }
    }
    match &result {
        Ok(_) => hooks.notify("on-success", &[]).await,
        Err(e) => {
            hooks
                .notify("on-failure", &[("ZDM_ERROR", e.to_string())])
                .await
        }
    }
    result.map_err(|e| {
        if e.is_cancelled() {
            Error::Cancelled
        } else {
            e
        }
    })
}

/// `Innodb_log_waits` (MySQL and MariaDB alike), if it can be read.
async fn log_waits(conn: &mut Conn) -> Option<u64> {
    crate::throttle::read_status(conn, &["Innodb_log_waits".to_string()])
        .await
        .first()
        .map(|&(_, n)| n)
}

/// The INSTANT fast path: the server changes only metadata, so a native ALTER is the fastest
/// and safest way. It still needs a brief metadata lock, so it runs under the cut-over's short
/// `lock_wait_timeout`, retried with growing pauses. `Err` says why the copy path should run.
async fn instant(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    plan: &Plan,
    opts: &ExecOptions,
) -> Result<Summary, String> {
    let started = Instant::now();
    let secs = opts.cut_over_lock_timeout.as_secs().max(1);
    let sql = format!(
        "ALTER /* zdm-ost */ TABLE {} {}, ALGORITHM=INSTANT",
        qualified(db, &names.original),
        plan.alter
    );
    for attempt in 1..=opts.cut_over_retries.max(1) {
        conn.query_drop(format!("SET SESSION lock_wait_timeout = {secs}"))
            .await
            .map_err(|e| server_message(&e))?;
        match conn.query_drop(&sql).await {
            Ok(()) => {
                tracing::info!(
                    "path: INSTANT (native metadata-only ALTER), done in {} ms",
                    started.elapsed().as_millis()
                );
                return Ok(Summary {
                    database: db.to_string(),
                    table: names.original.clone(),
                    alter: plan.alter.clone(),
                    path: "instant",
                    copied_rows: 0,
                    applied_changes: 0,
                    max_backlog: 0,
                    copy_ms: 0,
                    index_ms: None,
                    checksum: None,
                    cut_over: CutoverStats::default(),
                    total_ms: started.elapsed().as_millis() as u64,
                    old_table: None,
                    log_waits: None,
                });
            }
            Err(e) if server_code(&e) == Some(1205) => {
                let pause =
                    Duration::from_millis(500 * u64::from(attempt)).min(Duration::from_secs(10));
                tracing::warn!("INSTANT ALTER: the metadata lock was not granted within {secs} s (attempt {attempt}); retrying in {} ms", pause.as_millis());
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(server_message(&e)),
        }
    }
    Err(format!(
        "the metadata lock was not granted in {} attempts",
        opts.cut_over_retries.max(1)
    ))
}

/// Every `--status-interval` while the run works on the tables (copy to cut-over), whatever
/// it is doing: a status line (unless the progress bar shows it) and the `on-status` hook
/// (skipped while the previous one still runs: a hook slower than the interval must not pile
/// up).
fn spawn_status_ticker(
    progress: Arc<Progress>,
    hooks: Hooks,
    interval: Duration,
    print: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hook: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            if !matches!(
                progress.phase(),
                Phase::Copying | Phase::Indexing | Phase::Verifying | Phase::CuttingOver
            ) {
                continue;
            }
            if print {
                tracing::info!("{}", progress.status_line());
            }
            if hook.as_ref().is_none_or(|h| h.is_finished()) {
                let hooks = hooks.clone();
                hook = Some(tokio::spawn(
                    async move { hooks.notify("on-status", &[]).await },
                ));
            }
        }
    })
}

/// A progress bar on stderr, updated from the shared progress until `stop`.
fn spawn_progress_bar(
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(progress.estimated_rows.load(Relaxed).max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows, eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let est = progress.estimated_rows.load(Relaxed);
            let copied = progress.copied_rows.load(Relaxed);
            bar.set_length(est.max(copied).max(1));
            bar.set_position(copied);
            bar.set_message(format!(
                "{}, applied {}, backlog {}{}",
                progress.phase(),
                progress.applied_keys.load(Relaxed),
                progress.backlog.load(Relaxed),
                progress
                    .throttle_reason()
                    .map(|r| format!(", THROTTLED: {r}"))
                    .unwrap_or_default()
            ));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => break,
            }
        }
        bar.finish_and_clear();
    })
}

struct Run<'a> {
    cfg: &'a Config,
    opts: &'a ExecOptions,
    plan: &'a Plan,
    names: &'a TableNames,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    /// The checkpoint of the interrupted run being resumed.
    resume: Option<Checkpoint>,
    throttle: Arc<Throttle>,
    hooks: Hooks,
}

impl Run<'_> {
    async fn run(&self, conn: &mut Conn) -> Result<Summary, Error> {
        let started = Instant::now();
        let db = &self.cfg.database;
        let n = self.names;
        let server_id = choose_server_id(conn, self.opts.replica_server_id).await?;
        let log_waits_before = log_waits(conn).await;

        // Expand: the ghost with the ALTER applied, the changelog, the checkpoint.
        let ghost_q = qualified(db, &n.ghost);
        let q = Error::sql;
        if self.resume.is_none() {
            conn.query_drop(format!(
                "CREATE /* zdm-ost */ TABLE {ghost_q} LIKE {}",
                qualified(db, &n.original)
            ))
            .await
            .map_err(q("creating the ghost table"))?;
            conn.query_drop(format!(
                "ALTER /* zdm-ost */ TABLE {ghost_q} {}",
                self.plan.alter
            ))
            .await
            .map_err(q("altering the ghost table"))?;
            changelog::create(conn, db, &n.changelog)
                .await
                .map_err(q("creating the changelog table"))?;
            checkpoint::create(conn, db, &n.checkpoint)
                .await
                .map_err(q("creating the checkpoint table"))?;
        }
        self.progress.set_phase(Phase::Expanded);
        // heartbeats, lag, load, flag files: for as long as this run lasts
        let monitor_stop = self.cancel.child_token();
        let monitor_guard = monitor_stop.clone().drop_guard();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(
            Monitor {
                throttle: Arc::clone(&self.throttle),
                primary: self.cfg.primary.clone(),
                replicas: self.cfg.replicas.clone(),
                db: db.clone(),
                changelog: n.changelog.clone(),
                cancel: monitor_stop,
                abort: self.cancel.clone(),
                ready: Some(ready_tx),
            }
            .run(),
        );
        // the first round of checks (flag files, load, lag) comes before the first chunk
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        let autoinc_lock_mode: Option<u64> = conn
            .query_first("SELECT @@innodb_autoinc_lock_mode")
            .await
            .ok()
            .flatten();
        let serialize = (self.plan.original.auto_increment.is_some()
            || self.plan.ghost.auto_increment.is_some())
            && autoinc_lock_mode.is_none_or(|m| m < 2);
        if serialize {
            tracing::info!(
                "innodb_autoinc_lock_mode = {}: every INSERT ... SELECT into the ghost takes a table-level AUTO-INC lock, so copy chunks and applier flushes take turns (one flush connection at a time)",
                autoinc_lock_mode.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            );
        }
        let tables = Arc::new(self.tables(serialize));
        let key = key_columns(&self.plan.original, &self.plan.chunk_key.columns);

        // Stream: position first, proven live with a sentinel, before any row is copied. A
        // resumed run reads again from the checkpoint's safe position.
        let start = match &self.resume {
            Some(c) => {
                tracing::info!(
                    "resuming: {} rows were copied up to {}; reading the binlog again from {}",
                    c.copied_rows,
                    c.watermark
                        .as_ref()
                        .map(|k| crate::key::display_key(&self.plan.chunk_key.columns, k))
                        .unwrap_or_else(|| "the start".into()),
                    c.pos
                );
                c.pos.clone()
            }
            None => BinlogPos::current(conn)
                .await
                .map_err(q("reading the binlog position"))?,
        };
        tracing::info!("binlog stream starts at {start} (server id {server_id})");
        self.progress.set_binlog_pos(&start);
        let reached_from_elsewhere =
            crate::statement::reached_from_elsewhere(conn, db, &n.original)
                .await
                .unwrap_or(true);
        let names_case_insensitive = conn
            .query_first::<u64, _>("SELECT /* zdm-ost */ @@lower_case_table_names")
            .await
            .ok()
            .flatten()
            .is_none_or(|v| v != 0);
        let stream_spec = StreamSpec {
            reached_from_elsewhere,
            names_case_insensitive,
            endpoint: self.cfg.primary.clone(),
            flavor: self.plan.server.flavor,
            server_id,
            db: db.clone(),
            table: n.original.clone(),
            changelog: n.changelog.clone(),
            key,
            // a long UNIQUE index (USING HASH) adds a hidden DB_ROW_HASH_n column to the row
            // image, after the table's own columns
            columns: self.plan.original.columns.len()
                + self
                    .plan
                    .original
                    .indexes
                    .iter()
                    .filter(|i| i.unique && i.kind.eq_ignore_ascii_case("HASH"))
                    .count(),
        };
        let (mut stream, rx) = StreamTask::start(
            stream_spec,
            start.clone(),
            Arc::clone(&self.progress),
            &self.cancel,
        );
        let result = self
            .with_stream(conn, &tables, &mut stream, rx, start)
            .await;
        let stream_end = stream.stop().await;
        let (copied, copy_ms, index_ms, checksum, cut_over) = match (result, stream_end) {
            (Ok(r), _) => r,
            // a purged position surfaces as the stream's error: say what to do
            (Err(_), Err(crate::binlog::BinlogError::Purged { pos, .. })) if self.resume.is_some() => {
                return Err(Error::Resume(format!(
                    "the binlog at the checkpoint's position {pos} is no longer on the server (purged), so the changes made since cannot be read. Start over with --initially-drop-ghost-table"
                )))
            }
            // a stream failure is the root cause of the follower's "stream stopped"
            (Err(Error::Follow(FollowError::StreamEnded)), Err(e)) => return Err(e.into()),
            (Err(e), _) => return Err(e),
        };

        // Clean up (heartbeats stop first: they write to the changelog).
        drop(monitor_guard);
        for t in [&n.changelog, &n.checkpoint] {
            crate::leftovers::drop_table(conn, db, t)
                .await
                .map_err(q("dropping the changelog and checkpoint tables"))?;
        }
        let old_table = if self.opts.ok_to_drop_table {
            crate::leftovers::drop_table(conn, db, &n.old)
                .await
                .map_err(q("dropping the old table"))?;
            None
        } else {
            Some(qualified(db, &n.old))
        };
        let log_waits = match (log_waits_before, log_waits(conn).await) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        if let Some(n) = log_waits.filter(|n| *n > 0) {
            let size: Option<u64> = conn
                .query_first("SELECT /* zdm-ost */ @@innodb_log_buffer_size")
                .await
                .ok()
                .flatten();
            tracing::warn!(
                "InnoDB's redo log buffer was full {n} time(s) during the migration (Innodb_log_waits): writes on the server, the application's too, waited for it to be written out. A larger innodb_log_buffer_size (now {} MiB) avoids that",
                size.map(|b| (b >> 20).to_string()).unwrap_or_else(|| "?".into())
            );
        }
        self.progress.set_phase(Phase::Done);
        Ok(Summary {
            database: db.clone(),
            table: n.original.clone(),
            alter: self.plan.alter.clone(),
            path: "copy",
            copied_rows: copied,
            applied_changes: self.progress.applied_keys.load(Relaxed),
            max_backlog: self.progress.max_backlog.load(Relaxed),
            copy_ms,
            index_ms,
            checksum,
            cut_over,
            total_ms: started.elapsed().as_millis() as u64,
            old_table,
            log_waits,
        })
    }

    async fn with_stream(
        &self,
        conn: &mut Conn,
        tables: &Arc<Tables>,
        stream: &mut StreamTask,
        rx: tokio::sync::mpsc::Receiver<crate::binlog::StreamMsg>,
        start: BinlogPos,
    ) -> Result<(u64, u64, Option<u64>, Option<VerifyStats>, CutoverStats), Error> {
        let ep = &self.cfg.primary;
        let db = &self.cfg.database;
        let mut apply_conns = Vec::with_capacity(self.opts.apply_threads.max(1));
        for _ in 0..self.opts.apply_threads.max(1) {
            apply_conns.push(ep.connect_read_committed().await?);
        }
        tracing::info!(
            "applier: {} flush connections ({})",
            apply_conns.len(),
            apply_conns
                .iter()
                .map(|c| format!("connection {}", c.id()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Over an integer key the copy reads without row locks and the applier holds back the
        // changes of ranges not copied yet (apply.rs, "Frontier"); other keys cannot be
        // ordered here, so their copy takes NOWAIT locks and changes are applied at once.
        let frontier = Arc::new(Frontier::default());
        let integer_key = self.plan.original.integer_key(&self.plan.chunk_key.columns);
        let mut follower = Follower {
            rx,
            applier: Applier::new(
                Arc::clone(tables),
                Arc::clone(&self.progress),
                Arc::clone(&frontier),
            ),
            conns: apply_conns,
            endpoint: ep.clone(),
            flush_every: Duration::from_millis(50),
            last_pos: Some(start.clone()),
            safe_pos: Some(start),
            safe_watermark: None,
            sentinels: Default::default(),
            throttle: Some(Arc::clone(&self.throttle)),
            checkpoint: None,
        };
        let watermark = self.resume.as_ref().and_then(|c| c.watermark.clone());
        if let Some(w) = &watermark {
            self.progress.set_watermark(w);
        }
        let resumed_rows = self.resume.as_ref().map(|c| c.copied_rows).unwrap_or(0);
        self.progress.copied_rows.store(resumed_rows, Relaxed);
        let token = changelog::write_sentinel(conn, db, &self.names.changelog)
            .await
            .map_err(Error::sql("writing the first sentinel"))?;
        follower
            .follow(
                Some(&token),
                tokio::time::Instant::now() + Duration::from_secs(30),
                true,
                &self.cancel,
            )
            .await?;
        tracing::info!("binlog stream is live");
        // Secondary indexes: left out of the (still empty) ghost until the copy is done, if so
        // planned; a resumed run goes on as its checkpoint says.
        let deferred = match &self.resume {
            Some(c) => c.deferred_indexes.clone(),
            None => {
                crate::indexes::leave_out(conn, db, &self.names.ghost, &self.plan.deferred_indexes)
                    .await?
            }
        };
        let deferred = &deferred[..];
        let ghost_hash = checkpoint::ghost_hash(conn, db, &self.names.ghost, deferred)
            .await
            .map_err(Error::sql("reading the ghost's definition"))?;
        let ckp = |phase: Phase, follower: &Follower| Checkpoint {
            alter: self.plan.alter.clone(),
            ghost_hash: ghost_hash.clone(),
            deferred_indexes: deferred.to_vec(),
            // with changes held back at the safe position, a resumed copy starts below them
            watermark: match &follower.safe_watermark {
                Some(w) => w.clone(),
                None => self.progress.watermark(),
            },
            pos: follower
                .safe_pos
                .clone()
                .unwrap_or_else(|| BinlogPos::new("", 4)),
            phase: phase.to_string(),
            copied_rows: self.progress.copied_rows.load(Relaxed),
            tool_version: checkpoint::VERSION.into(),
            updated_at: String::new(),
        };
        tracing::info!("copying rows");
        self.save_checkpoint(conn, &ckp(Phase::Copying, &follower))
            .await;

        // Copy, while applying changes.
        self.progress.set_phase(Phase::Copying);
        self.progress
            .estimated_rows
            .store(self.plan.rows_estimate, Relaxed);
        let copy_started = Instant::now();
        let mut copy_conn = ep.connect_read_committed().await?;
        if integer_key {
            // (no flush is running: follow() has returned)
            frontier.start(watermark.clone());
        }
        let copy_opts = CopyOptions {
            chunk_size: self.opts.chunk_size,
            chunk_time: self.opts.chunk_time,
            start_after: watermark,
            threads: self.opts.threads,
            // (no estimate: no cap beyond MAX_CHUNK)
            max_chunk: copier::max_chunk_rows(
                self.plan
                    .data_bytes
                    .checked_div(self.plan.rows_estimate)
                    .unwrap_or(0),
            ),
            frontier: Arc::clone(&frontier),
        };
        let copy_tables = Arc::clone(tables);
        let copy_progress = Arc::clone(&self.progress);
        let copy_cancel = self.cancel.clone();
        let copy_throttle = Arc::clone(&self.throttle);
        let copy_ep = ep.clone();
        let mut copy_task = tokio::spawn(async move {
            let r = copier::copy(
                &mut copy_conn,
                &copy_ep,
                copy_tables,
                copy_opts,
                copy_progress,
                copy_throttle,
                copy_cancel,
            )
            .await;
            let _ = copy_conn.disconnect().await;
            r
        });
        let mut next_checkpoint = Instant::now() + checkpoint::EVERY;
        // `follow` must run to completion each time: a flush dropped halfway would lose keys
        // (so no select! against the copy task here; it is polled between rounds).
        let copied = loop {
            let until = tokio::time::Instant::now() + Duration::from_millis(100);
            follower.follow(None, until, true, &self.cancel).await?;
            if copy_task.is_finished() {
                frontier.open();
                break (&mut copy_task).await.map_err(|e| Error::Sql {
                    what: "the copy task",
                    reason: e.to_string(),
                })??;
            }
            if Instant::now() >= next_checkpoint {
                self.save_checkpoint(conn, &ckp(Phase::Copying, &follower))
                    .await;
                next_checkpoint = Instant::now() + checkpoint::EVERY;
            }
        };
        let copy_ms = copy_started.elapsed().as_millis() as u64;
        tracing::info!(
            "copy done: {copied} rows in {copy_ms} ms; {}",
            self.progress.status_line()
        );

        let copied = copied + resumed_rows;

        // From here on the follower keeps the checkpoint current as it applies: the checksum,
        // and a postponed cut-over above all, can last hours.
        let mut last = ckp(Phase::Verifying, &follower);
        last.watermark = self.progress.watermark();
        match ep.connect().await {
            Ok(c) => {
                follower.checkpoint = Some(checkpoint::Periodic::new(
                    c,
                    db,
                    &self.names.checkpoint,
                    last,
                ))
            }
            Err(e) => tracing::warn!(
                "the checkpoint will not follow the applier after the copy (connecting: {e}); a resumed run would start from where the copy ended"
            ),
        }
        // Verify.
        self.save_checkpoint(conn, &ckp(Phase::Verifying, &follower))
            .await;
        let checksum = if self.opts.skip_checksum {
            tracing::warn!("--skip-checksum: the ghost table is NOT compared with the original before the swap");
            None
        } else {
            self.progress.set_phase(Phase::Verifying);
            crate::failpoint::hit("checksum").await;
            let stats = Verify {
                endpoint: ep,
                tables: Arc::clone(tables),
                ghost: &self.plan.ghost,
                original: &self.plan.original,
                changelog: self.names.changelog.clone(),
                control: conn,
                follower: &mut follower,
                lock_timeout: self.opts.cut_over_lock_timeout,
                progress: Arc::clone(&self.progress),
                throttle: Arc::clone(&self.throttle),
                cancel: &self.cancel,
            }
            .run()
            .await?;
            tracing::info!(
                "checksum: original and ghost equal over {} chunks ({} repaired) in {} ms",
                stats.chunks,
                stats.repaired_chunks,
                stats.ms
            );
            Some(stats)
        };

        // Build the deferred secondary indexes, applying changes meanwhile. After the checksum,
        // which compares rows only: it then has both tables to itself instead of sharing the
        // server with replicas replaying the build (measured on the benchmark's 1M rows, the
        // replica on the same 2 cores, 4 alternating runs each: checksum + build 1.84-2.03 s
        // with the build first, 1.43-1.82 s with the checksum first). Building beside the
        // checksum's first round, the original's side during the build and the ghost's after it,
        // measured no better (1.02-1.33 s): a snapshot reading the ghost during the build would
        // hold off the build's last step, which needs the ghost's metadata lock to itself, and
        // that step would then stop the applier until the checksum ended. So build + one side
        // takes as long as both sides side by side + build.
        let index_ms = if deferred.is_empty() {
            None
        } else {
            self.progress.set_phase(Phase::Indexing);
            if let Some(c) = &mut follower.checkpoint {
                c.set_phase(&Phase::Indexing.to_string());
            }
            self.save_checkpoint(conn, &ckp(Phase::Indexing, &follower))
                .await;
            let build = crate::indexes::Build {
                endpoint: ep,
                db,
                ghost: &self.names.ghost,
                throttle: &self.throttle,
                cancel: &self.cancel,
            };
            Some(build.run(conn, &mut follower, deferred).await?)
        };

        self.hooks.notify("on-row-copy-complete", &[]).await;

        // Postponed? Stay in sync until the flag file is gone (or `unpostpone`).
        if self.throttle.postponed() {
            self.progress.postponed.store(true, Relaxed);
            tracing::info!(
                "cut-over postponed: {} exists; remove it, or send `unpostpone` to the control socket",
                self.opts.throttle.postpone_flag_file.as_ref().map(|f| f.display().to_string()).unwrap_or_default()
            );
            while self.throttle.postponed() {
                let until = tokio::time::Instant::now() + Duration::from_millis(200);
                follower.follow(None, until, true, &self.cancel).await?;
            }
            self.progress.postponed.store(false, Relaxed);
            tracing::info!("cut-over no longer postponed");
        }
        if let Err(e) = self.hooks.run("on-before-cut-over", &[]).await {
            return Err(Error::Hook(e));
        }

        // Cut over.
        self.progress.set_phase(Phase::CuttingOver);
        if let Some(c) = follower.checkpoint.take() {
            c.close().await;
        }
        self.save_checkpoint(conn, &ckp(Phase::CuttingOver, &follower))
            .await;
        crate::failpoint::hit("cut-over-start").await;
        let expected_columns = self
            .plan
            .ghost
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let stats = Cutover {
            endpoint: ep,
            server: &self.plan.server,
            tables: Arc::clone(tables),
            old: self.names.old.clone(),
            changelog: self.names.changelog.clone(),
            expected_columns,
            auto_increment: self.plan.auto_increment,
            control: conn,
            follower: &mut follower,
            stream,
            opts: CutoverOptions {
                lock_timeout: self.opts.cut_over_lock_timeout,
                retries: self.opts.cut_over_retries,
            },
            cancel: &self.cancel,
            throttle: Arc::clone(&self.throttle),
            progress: Arc::clone(&self.progress),
            state: CutoverState::default(),
        }
        .run()
        .await?;
        for c in follower.conns.drain(..) {
            let _ = c.disconnect().await;
        }
        Ok((copied, copy_ms, index_ms, checksum, stats))
    }

    /// Writes the checkpoint; a failure is logged, not fatal (the next write may succeed).
    async fn save_checkpoint(&self, conn: &mut Conn, c: &Checkpoint) {
        if let Err(e) = checkpoint::write(conn, &self.cfg.database, &self.names.checkpoint, c).await
        {
            tracing::warn!("could not write the checkpoint: {}", server_message(&e));
        }
    }

    fn tables(&self, serialize_inserts: bool) -> Tables {
        let copied: Vec<&crate::ddl::MappedColumn> = self
            .plan
            .mapping
            .iter()
            .filter(|m| m.source.is_some())
            .collect();
        Tables {
            db: self.cfg.database.clone(),
            orig: self.names.original.clone(),
            ghost: self.names.ghost.clone(),
            key_orig: key_columns(&self.plan.original, &self.plan.chunk_key.columns),
            key_ghost: key_columns(&self.plan.ghost, &self.plan.chunk_key.ghost_columns),
            key_index: self.plan.chunk_key.original_index.clone(),
            ghost_index: self.plan.chunk_key.ghost_index.clone(),
            targets: copied.iter().map(|m| m.target.clone()).collect(),
            sources: copied.iter().filter_map(|m| m.source.clone()).collect(),
            fills: crate::plan::filled_columns(&self.plan.mapping, &self.plan.ghost),
            shared_unique: crate::key_compat::shared_unique_indexes(
                &self.plan.original,
                &self.plan.ghost,
                |c| {
                    copied
                        .iter()
                        .find(|m| {
                            m.source
                                .as_deref()
                                .is_some_and(|s| s.eq_ignore_ascii_case(c))
                        })
                        .map(|m| m.target.clone())
                },
            ),
            share_nowait: self.plan.server.share_nowait(),
            insert_slot: serialize_inserts.then(|| Arc::new(tokio::sync::Mutex::new(()))),
        }
    }
}

/// The key columns as the key codec sees them in one table (position, type, charset).
fn key_columns(t: &TableInfo, names: &[String]) -> Vec<KeyColumn> {
    t.key_columns(names)
        .expect("the chunk key's columns come from the table")
}

/// A server id for the binlog reader that no replica of this primary uses.
async fn choose_server_id(conn: &mut Conn, wanted: Option<u32>) -> Result<u32, Error> {
    let own: u32 = conn
        .query_first("SELECT @@server_id")
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let mut used = vec![own];
    if let Ok(rows) = conn
        .query::<mysql_async::Row, _>("SHOW /* zdm-ost */ SLAVE HOSTS")
        .await
    {
        used.extend(rows.iter().filter_map(|r| r.get::<u32, _>(0)));
    }
    match wanted {
        Some(id) if used.contains(&id) => Err(Error::ServerId(format!(
            "--replica-server-id {id} is already used by this server or one of its replicas (ids in use: {used:?}); choose another"
        ))),
        Some(id) => Ok(id),
        None => loop {
            let id = rand::random::<u32>() | 0x8000_0000;
            if !used.contains(&id) {
                return Ok(id);
            }
        },
    }
}
