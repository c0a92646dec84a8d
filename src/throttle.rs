//! Throttling: one [`Throttle`] that the copier, the checksum and the applier consult between
//! units of work, and the monitor task that feeds it.
//!
//! Every pause has a reason, from one of several sources. **Soft** reasons (replica lag, load,
//! write latency, an unreachable replica) pause the copy and the checksum, while the applier
//! keeps applying, so the backlog cannot grow without bound. **Hard** reasons (the throttle flag
//! file, the operator's `throttle` command) pause the applier too. The cut-over never starts
//! while throttled, and is never throttled once it holds its lock.
//!
//! Replica lag is measured by a heartbeat, not `Seconds_Behind_Master` (1 s resolution, NULL
//! when the SQL thread stops): every `--heartbeat-interval-millis` the monitor writes zdm-ost's
//! own clock into the changelog on the primary and reads it back on each replica; lag is the
//! difference with the clock at read time (one clock, so no skew between servers). A replica
//! that cannot be read, or whose replication is stopped, throttles: it fails closed.
//!
//! The heartbeat write doubles as a probe of the primary's commit latency: a sliding p95 above
//! `--max-write-latency-millis` pauses the copy. `--critical-load` and the panic flag file abort
//! the migration cleanly (critical load only after a confirming re-check).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::conn::{Endpoint, ServerInfo};
use crate::progress::Progress;
use crate::sql::{qualified, server_message};

/// `Var=N[,Var=N...]`, as in `--max-load Threads_running=25`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadSpec(pub Vec<(String, u64)>);

impl std::str::FromStr for LoadSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, n) = part.split_once('=').ok_or_else(|| {
                format!("`{part}` is not VARIABLE=NUMBER (e.g. Threads_running=25)")
            })?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`{name}` is not a status variable name"));
            }
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("`{}` in `{part}` is not a whole number", n.trim()))?;
            v.push((name.to_string(), n));
        }
        Ok(LoadSpec(v))
    }
}

impl std::fmt::Display for LoadSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Operator,
    FlagFile,
    Lag,
    Load,
    Latency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Pauses copy and checksum.
    Soft,
    /// Pauses the applier too.
    Hard,
}

/// The settings operators can change while a migration runs.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub heartbeat_interval: Duration,
    pub max_lag: Duration,
    pub max_load: LoadSpec,
    pub critical_load: LoadSpec,
    pub critical_load_interval: Duration,
    pub max_write_latency: Option<Duration>,
    pub throttle_flag_file: Option<PathBuf>,
    pub postpone_flag_file: Option<PathBuf>,
    pub panic_flag_file: Option<PathBuf>,
}

pub struct Throttle {
    reasons: Mutex<BTreeMap<Source, (Severity, String)>>,
    tx: watch::Sender<(bool, bool)>,
    pub settings: Mutex<ThrottleSettings>,
    /// Why the migration must stop (critical load, panic), if it must.
    abort: Mutex<Option<String>>,
    pub unpostponed: AtomicBool,
    /// Lag per replica address, in ms (`u64::MAX`: unknown).
    pub lags: Mutex<BTreeMap<String, u64>>,
    pub heartbeat_p95_ms: AtomicU64,
    progress: Arc<Progress>,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings, progress: Arc<Progress>) -> Arc<Throttle> {
        let (tx, _) = watch::channel((false, false));
        Arc::new(Throttle {
            reasons: Mutex::new(BTreeMap::new()),
            tx,
            settings: Mutex::new(settings),
            abort: Mutex::new(None),
            unpostponed: AtomicBool::new(false),
            lags: Mutex::new(BTreeMap::new()),
            heartbeat_p95_ms: AtomicU64::new(0),
            progress,
        })
    }

    pub fn settings(&self) -> ThrottleSettings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or clears, with `None`) the reason from one source.
    pub fn set(&self, source: Source, reason: Option<(Severity, String)>) {
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match &reason {
            Some(x) => r.get(&source) != Some(x),
            None => r.contains_key(&source),
        };
        if !changed {
            return;
        }
        match reason {
            Some(x) => {
                tracing::info!("throttled: {}", x.1);
                r.insert(source, x);
            }
            None => {
                if let Some((_, old)) = r.remove(&source) {
                    tracing::info!("no longer throttled by: {old}");
                }
            }
        }
        let soft = !r.is_empty();
        let hard = r.values().any(|(s, _)| *s == Severity::Hard);
        let text = (!r.is_empty()).then(|| {
            r.values()
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>()
                .join("; ")
        });
        self.progress.set_throttle_reason(text);
        let _ = self.tx.send_replace((soft, hard));
    }

    /// The current reasons, joined; `None` when not throttled.
    pub fn reason(&self) -> Option<String> {
        let r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        (!r.is_empty()).then(|| {
            r.values()
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub fn is_throttled(&self) -> bool {
        self.tx.borrow().0
    }

    pub fn is_hard_throttled(&self) -> bool {
        self.tx.borrow().1
    }

    /// Waits while anything throttles (copy, checksum, cut-over start). Returns false if cancelled.
    pub async fn wait_soft(&self, cancel: &CancellationToken) -> bool {
        self.wait(cancel, |(soft, _)| !soft).await
    }

    async fn wait(&self, cancel: &CancellationToken, ok: impl Fn(&(bool, bool)) -> bool) -> bool {
        let mut rx = self.tx.subscribe();
        loop {
            if ok(&rx.borrow_and_update()) {
                return true;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return true; },
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Asks the migration to stop, for this reason.
    pub fn abort(&self, reason: String, cancel: &CancellationToken) {
        tracing::error!("aborting: {reason}");
        let mut a = self.abort.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            *a = Some(reason);
        }
        cancel.cancel();
    }

    pub fn abort_reason(&self) -> Option<String> {
        self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Should the cut-over wait? (postpone flag file present and no `unpostpone`)
    pub fn postponed(&self) -> bool {
        if self.unpostponed.load(Relaxed) {
            return false;
        }
        self.settings()
            .postpone_flag_file
            .is_some_and(|f| f.exists())
    }
}

/// What the monitor needs.
pub struct Monitor {
    pub throttle: Arc<Throttle>,
    pub primary: Endpoint,
    pub replicas: Vec<(String, u16)>,
    pub db: String,
    pub changelog: String,
    /// Stops the monitor.
    pub cancel: CancellationToken,
    /// Cancelled (with a reason) to abort the migration.
    pub abort: CancellationToken,
    /// Told when the first round of checks is done (the copy waits for it).
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct ReplicaWatch {
    ep: Endpoint,
    conn: Option<Conn>,
    server: Option<ServerInfo>,
    last_status_check: Option<Instant>,
    running: Result<(), String>,
}

impl Monitor {
    /// Runs until cancelled. Problems reading the primary are logged and retried.
    pub async fn run(mut self) {
        let t = &self.throttle;
        let mut primary: Option<Conn> = None;
        let mut latencies: VecDeque<u64> = VecDeque::with_capacity(100);
        let mut replicas: Vec<ReplicaWatch> = self
            .replicas
            .iter()
            .map(|(h, p)| ReplicaWatch {
                ep: self.primary.with_addr(h, *p),
                conn: None,
                server: None,
                last_status_check: None,
                running: Ok(()),
            })
            .collect();
        let mut critical_since: Option<Instant> = None;
        let mut first = true;
        loop {
            let s = t.settings();
            if !first {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(s.heartbeat_interval) => {}
                    _ = self.cancel.cancelled() => return,
                }
            }
            first = false;
            // flag files and the panic flag
            if let Some(f) = &s.panic_flag_file {
                if f.exists() {
                    t.abort(
                        format!("the panic flag file {} exists", f.display()),
                        &self.abort,
                    );
                    return;
                }
            }
            t.set(
                Source::FlagFile,
                s.throttle_flag_file
                    .as_ref()
                    .filter(|f| f.exists())
                    .map(|f| {
                        (
                            Severity::Hard,
                            format!("the throttle flag file {} exists", f.display()),
                        )
                    }),
            );

            // heartbeat: write our clock, time the commit
            if primary.is_none() {
                primary = self.primary.connect().await.ok();
            }
            let Some(conn) = primary.as_mut() else {
                continue;
            };
            let started = Instant::now();
            let wrote = conn
                .exec_drop(
                    format!(
                        "INSERT /* zdm-ost */ INTO {} (id, kind, value) VALUES (1, 'heartbeat', ?) \
                         ON DUPLICATE KEY UPDATE value = VALUES(value)",
                        qualified(&self.db, &self.changelog)
                    ),
                    (now_micros().to_string(),),
                )
                .await;
            match wrote {
                Ok(()) => {
                    latencies.push_back(started.elapsed().as_micros() as u64);
                    if latencies.len() > 100 {
                        latencies.pop_front();
                    }
                }
                Err(_) if self.cancel.is_cancelled() => break,
                Err(e) => {
                    tracing::warn!("heartbeat write failed: {}", server_message(&e));
                    primary = None;
                    continue;
                }
            }
            let p95 = p95(&latencies);
            t.heartbeat_p95_ms.store(p95 / 1000, Relaxed);
            t.set(
                Source::Latency,
                s.max_write_latency
                    .filter(|max| latencies.len() >= 5 && p95 > max.as_micros() as u64)
                    .map(|max| {
                        (
                            Severity::Soft,
                            format!(
                                "write latency p95 {:.1} ms > --max-write-latency-millis {}",
                                p95 as f64 / 1000.0,
                                max.as_millis()
                            ),
                        )
                    }),
            );

            // load
            let names: Vec<String> = s
                .max_load
                .0
                .iter()
                .chain(s.critical_load.0.iter())
                .map(|(n, _)| n.clone())
                .collect();
            if !names.is_empty() {
                let status = read_status(conn, &names).await;
                let over = |spec: &LoadSpec| -> Option<String> {
                    spec.0.iter().find_map(|(n, max)| {
                        status
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .filter(|(_, v)| v > max)
                            .map(|(k, v)| format!("{k}={v} > {max}"))
                    })
                };
                match over(&s.critical_load) {
                    Some(what) => match critical_since {
                        None => {
                            tracing::warn!(
                                "critical load ({what}); re-checking in {} ms",
                                s.critical_load_interval.as_millis()
                            );
                            critical_since = Some(Instant::now());
                        }
                        Some(since) if since.elapsed() >= s.critical_load_interval => {
                            t.abort(
                                format!(
                                    "critical load: {what} (--critical-load {})",
                                    s.critical_load
                                ),
                                &self.abort,
                            );
                            return;
                        }
                        Some(_) => {}
                    },
                    None => critical_since = None,
                }
                t.set(
                    Source::Load,
                    over(&s.max_load).map(|what| (Severity::Soft, format!("max-load: {what}"))),
                );
            } else {
                t.set(Source::Load, None);
            }

            // replicas
            let mut lag_reasons = Vec::new();
            for r in replicas.iter_mut() {
                let addr = r.ep.to_string();
                match replica_lag(r, &self.db, &self.changelog).await {
                    Ok(lag_ms) => {
                        t.lags
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(addr.clone(), lag_ms);
                        if lag_ms > s.max_lag.as_millis() as u64 {
                            lag_reasons.push(format!(
                                "replica {addr} lags {lag_ms} ms > --max-lag-millis {}",
                                s.max_lag.as_millis()
                            ));
                        }
                    }
                    Err(why) => {
                        t.lags
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(addr.clone(), u64::MAX);
                        lag_reasons.push(format!("replica {addr}: {why}"));
                    }
                }
            }
            t.set(
                Source::Lag,
                (!lag_reasons.is_empty()).then(|| (Severity::Soft, lag_reasons.join("; "))),
            );
        }
    }
}

fn p95(v: &VecDeque<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s: Vec<u64> = v.iter().copied().collect();
    s.sort_unstable();
    s[((s.len() * 95).div_ceil(100)).saturating_sub(1)]
}

/// The numeric global status variables among `names` (any case); none if it cannot be read.
pub(crate) async fn read_status(conn: &mut Conn, names: &[String]) -> Vec<(String, u64)> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW /* zdm-ost */ GLOBAL STATUS")
        .await
        .unwrap_or_default();
    rows.into_iter()
        .filter(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect()
}

/// Lag of one replica in ms, or why it cannot be known.
async fn replica_lag(r: &mut ReplicaWatch, db: &str, changelog: &str) -> Result<u64, String> {
    if r.conn.is_none() {
        let mut c =
            r.ep.connect()
                .await
                .map_err(|e| format!("unreachable ({e})"))?;
        r.server = ServerInfo::read(&mut c).await.ok();
        r.conn = Some(c);
    }
    let conn = r.conn.as_mut().expect("connected above");
    // replication threads, once a second
    if r.last_status_check
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
    {
        r.last_status_check = Some(Instant::now());
        let sql = r
            .server
            .as_ref()
            .map(|s| s.replica_status_sql())
            .unwrap_or("SHOW /* zdm-ost */ SLAVE STATUS");
        r.running = match conn.query_first::<mysql_async::Row, _>(sql).await {
            Err(e) => {
                r.conn = None;
                return Err(format!(
                    "cannot read replica status: {}",
                    server_message(&e)
                ));
            }
            Ok(None) => Err("not a replica".into()),
            Ok(Some(row)) => {
                let get =
                    |names: &[&str]| crate::conn::replica_field(&row, names).unwrap_or_default();
                let io = get(crate::conn::IO_RUNNING);
                let sql_t = get(crate::conn::SQL_RUNNING);
                if io == "Yes" && sql_t == "Yes" {
                    Ok(())
                } else {
                    Err(format!(
                        "replication is not running (IO thread {io}, SQL thread {sql_t})"
                    ))
                }
            }
        };
    }
    r.running.clone()?;
    let v: Result<Option<String>, _> = conn
        .exec_first(
            format!(
                "SELECT /* zdm-ost */ value FROM {} WHERE id = 1",
                qualified(db, changelog)
            ),
            (),
        )
        .await;
    match v {
        Err(e) => {
            r.conn = None;
            Err(format!("cannot read the heartbeat: {}", server_message(&e)))
        }
        Ok(None) => Err("no heartbeat has reached it yet".into()),
        Ok(Some(v)) => {
            let then: u64 = v
                .parse()
                .map_err(|_| format!("unreadable heartbeat `{v}`"))?;
            Ok(now_micros().saturating_sub(then) / 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_specs_parse_or_say_why_not() {
        let s: LoadSpec = "Threads_running=25, Threads_connected=100".parse().unwrap();
        assert_eq!(
            s.0,
            vec![
                ("Threads_running".into(), 25),
                ("Threads_connected".into(), 100)
            ]
        );
        assert_eq!(s.to_string(), "Threads_running=25,Threads_connected=100");
        assert_eq!(
            "Threads_running".parse::<LoadSpec>().unwrap_err(),
            "`Threads_running` is not VARIABLE=NUMBER (e.g. Threads_running=25)"
        );
        assert_eq!(
            "Threads_running=x".parse::<LoadSpec>().unwrap_err(),
            "`x` in `Threads_running=x` is not a whole number"
        );
        assert_eq!(
            "a;b=1".parse::<LoadSpec>().unwrap_err(),
            "`a;b` is not a status variable name"
        );
    }

    #[test]
    fn p95_of_a_window() {
        let v: VecDeque<u64> = (1..=100).collect();
        assert_eq!(p95(&v), 95);
        let v: VecDeque<u64> = [5].into_iter().collect();
        assert_eq!(p95(&v), 5);
    }
}
