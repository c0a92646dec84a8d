//! The operator's control socket: a unix socket (mode 0600) and, optionally, a TCP port bound to
//! 127.0.0.1. One command per line, one answer per command (gh-ost's vocabulary):
//! `help`, `status`, `status-json`, `throttle`, `no-throttle`, `chunk-size=N`, `chunk-size=?`,
//! `max-lag-millis=N`, `max-load=...`, `critical-load=...`, `unpostpone`, `panic`.
//! A bad command or value gets an `error: ...` line; nothing a client sends can crash the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::throttle::{LoadSpec, Severity, Source, Throttle};

pub const HELP: &str =
    "commands: help, status, status-json, throttle, no-throttle, chunk-size=N, chunk-size=?, \
max-lag-millis=N, max-load=Var=N[,Var=N], critical-load=Var=N[,Var=N], unpostpone, panic";

/// The longest command line served.
pub const MAX_LINE: usize = 4096;
/// The commands served over TCP: they change nothing.
pub const READ_ONLY: [&str; 3] = ["help", "status", "status-json"];

#[derive(Clone)]
pub struct Control {
    pub throttle: Arc<Throttle>,
    pub progress: Arc<Progress>,
    /// Cancelled by `panic`.
    pub cancel: CancellationToken,
}

impl Control {
    /// Answers one command line.
    pub fn handle(&self, line: &str) -> String {
        let line = line.trim();
        let (cmd, arg) = match line.split_once('=') {
            Some((c, a)) => (c.trim(), Some(a.trim())),
            None => (line, None),
        };
        match (cmd, arg) {
            ("help", None) => HELP.into(),
            ("status", None) => self.progress.status_line(),
            ("status-json", None) => self.status_json().to_string(),
            ("throttle", None) => {
                self.throttle.set(
                    Source::Operator,
                    Some((Severity::Hard, "operator: throttle command".into())),
                );
                "ok: throttled".into()
            }
            ("no-throttle", None) => {
                self.throttle.set(Source::Operator, None);
                "ok: operator throttle released".into()
            }
            ("chunk-size", Some("?")) => self.progress.chunk_size.load(Relaxed).to_string(),
            ("chunk-size", Some(v)) => match v.parse::<u64>() {
                Ok(n) if (crate::copier::MIN_CHUNK..=crate::copier::MAX_CHUNK).contains(&n) => {
                    self.progress.chunk_size_request.store(n, Relaxed);
                    format!("ok: next chunk {n} rows")
                }
                _ => format!(
                    "error: chunk-size takes a whole number from {} to {}",
                    crate::copier::MIN_CHUNK,
                    crate::copier::MAX_CHUNK
                ),
            },
            ("max-lag-millis", Some(v)) => match v.parse::<u64>() {
                Ok(n) if n > 0 => {
                    self.throttle
                        .settings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .max_lag = Duration::from_millis(n);
                    format!("ok: max-lag-millis {n}")
                }
                _ => "error: max-lag-millis takes a positive whole number".into(),
            },
            ("max-load", Some(v)) | ("critical-load", Some(v)) => match v.parse::<LoadSpec>() {
                Ok(spec) => {
                    let mut s = self
                        .throttle
                        .settings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if cmd == "max-load" {
                        s.max_load = spec.clone();
                    } else {
                        s.critical_load = spec.clone();
                    }
                    format!("ok: {cmd} {spec}")
                }
                Err(e) => format!("error: {e}"),
            },
            ("unpostpone", None) => {
                self.throttle.unpostponed.store(true, Relaxed);
                "ok: cut-over no longer postponed".into()
            }
            ("panic", None) => {
                self.throttle
                    .abort("operator: panic command".into(), &self.cancel);
                "ok: aborting".into()
            }
            ("", None) => "error: empty command; try help".into(),
            _ => format!("error: unknown command `{line}`; try help"),
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        let p = &self.progress;
        serde_json::json!({
            "phase": p.phase().to_string(),
            "copied_rows": p.copied_rows.load(Relaxed),
            "estimated_rows": p.estimated_rows.load(Relaxed),
            "applied_changes": p.applied_keys.load(Relaxed),
            "backlog": p.backlog.load(Relaxed),
            "chunk_size": p.chunk_size.load(Relaxed),
            "throttled": self.throttle.reason(),
            "postponed": self.throttle.postponed(),
            "replica_lag_ms": *self.throttle.lags.lock().unwrap_or_else(|e| e.into_inner()),
            "binlog": p.binlog_pos().map(|b| b.to_string()),
            "elapsed_seconds": p.started.elapsed().as_secs_f64(),
        })
    }

    /// Answers command lines on one connection. Over TCP (`read_only`), which any local user
    /// can reach, only commands that change nothing are served. A line longer than
    /// [`MAX_LINE`] bytes gets an error and ends the connection (a 400 MB line once took the
    /// process to 419 MB).
    async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S, read_only: bool) {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        loop {
            let mut line = Vec::new();
            let n = match (&mut r)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(n) => n,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                let _ = w
                    .write_all(format!("error: command longer than {MAX_LINE} bytes\n").as_bytes())
                    .await;
                // end our side, and read (and drop) a bounded rest for a moment, so the client
                // gets the answer instead of a reset
                let _ = w.shutdown().await;
                let rest = (&mut r).take(1 << 20);
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::io::copy(&mut { rest }, &mut tokio::io::sink()),
                )
                .await;
                return;
            }
            let line = String::from_utf8_lossy(&line);
            let cmd = line.trim();
            let answer = if read_only && !READ_ONLY.contains(&cmd) {
                format!(
                    "error: over TCP zdm-ost serves only {}; send `{cmd}` on the control socket (owner-only)",
                    READ_ONLY.join(", ")
                )
            } else {
                self.handle(cmd)
            };
            if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Serves the unix socket (and the TCP port) until `stop` is cancelled; removes the socket
    /// file at the end.
    pub async fn serve(
        self,
        socket: PathBuf,
        tcp_port: Option<u16>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        if socket.exists() {
            // a socket nobody answers on is a leftover of a killed run
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Err(std::io::Error::other(format!(
                    "{} is in use by another running process",
                    socket.display()
                )));
            }
            std::fs::remove_file(&socket)?;
        }
        let unix = tokio::net::UnixListener::bind(&socket)?;
        set_owner_only(&socket)?;
        let tcp = match tcp_port {
            Some(p) => Some(tokio::net::TcpListener::bind(("127.0.0.1", p)).await?),
            None => None,
        };
        tracing::info!(
            "control: echo status | nc -U {}{}",
            socket.display(),
            tcp_port
                .map(|p| format!(" (or TCP 127.0.0.1:{p})"))
                .unwrap_or_default()
        );
        loop {
            tokio::select! {
                a = unix.accept() => if let Ok((s, _)) = a { tokio::spawn(self.clone().serve_conn(s, false)); },
                a = async { match &tcp { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                    if let Ok((s, _)) = a { tokio::spawn(self.clone().serve_conn(s, true)); }
                }
                _ = stop.cancelled() => break,
            }
        }
        let _ = std::fs::remove_file(&socket);
        Ok(())
    }
}

fn set_owner_only(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
}

/// The default socket: in the system temp dir, named after database and table.
pub fn default_socket(db: &str, table: &str) -> PathBuf {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    std::env::temp_dir().join(format!("zdm-ost.{}.{}.sock", clean(db), clean(table)))
}
