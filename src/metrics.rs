//! `--metrics-addr`: Prometheus text metrics over HTTP (any path), for scraping while a
//! migration runs. The endpoint is a few lines of HTTP/1.1 over a tokio listener: one response
//! per connection, no keep-alive; nothing more is needed to be scraped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::throttle::Throttle;

pub fn render(p: &Progress, t: &Throttle) -> String {
    let mut s = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, String)>| {
        let _ = writeln!(s, "# HELP zdm_{name} {help}\n# TYPE zdm_{name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(s, "zdm_{name}{labels} {v}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "rows_copied",
        "Rows copied into the ghost table.",
        "counter",
        one(p.copied_rows.load(Relaxed).to_string()),
    );
    metric(
        "rows_estimated",
        "Estimated rows of the original table.",
        "gauge",
        one(p.estimated_rows.load(Relaxed).to_string()),
    );
    metric(
        "changes_applied",
        "Changed keys re-synced into the ghost table.",
        "counter",
        one(p.applied_keys.load(Relaxed).to_string()),
    );
    metric(
        "backlog",
        "Changed keys waiting to be applied.",
        "gauge",
        one(p.backlog.load(Relaxed).to_string()),
    );
    metric(
        "held_back",
        "Changed keys in ranges the copy has not reached yet; applied right after their chunk.",
        "gauge",
        one(p.held_back.load(Relaxed).to_string()),
    );
    metric(
        "chunk_size",
        "Rows in the next copy chunk.",
        "gauge",
        one(p.chunk_size.load(Relaxed).to_string()),
    );
    let lags: Vec<(String, String)> = t
        .lags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(r, ms)| {
            let v = if *ms == u64::MAX {
                "NaN".to_string()
            } else {
                format!("{:.3}", *ms as f64 / 1000.0)
            };
            (format!("{{replica=\"{}\"}}", escape(r)), v)
        })
        .collect();
    metric(
        "replica_lag_seconds",
        "Replica lag by heartbeat (NaN: unknown).",
        "gauge",
        lags,
    );
    let reason = t.reason();
    metric(
        "throttled",
        "1 while throttled.",
        "gauge",
        one(u8::from(reason.is_some()).to_string()),
    );
    metric(
        "throttle_reason",
        "Why the migration is throttled.",
        "gauge",
        reason
            .map(|r| vec![(format!("{{reason=\"{}\"}}", escape(&r)), "1".to_string())])
            .unwrap_or_default(),
    );
    metric(
        "phase",
        "The migration's phase.",
        "gauge",
        vec![(format!("{{phase=\"{}\"}}", p.phase()), "1".into())],
    );
    metric(
        "cut_over_attempts",
        "Cut-over attempts made.",
        "counter",
        one(p.cutover_attempts.load(Relaxed).to_string()),
    );
    metric(
        "cut_over_lock_held_seconds",
        "How long the last cut-over held its lock.",
        "gauge",
        one(format!(
            "{:.3}",
            p.cutover_lock_ms.load(Relaxed) as f64 / 1000.0
        )),
    );
    metric(
        "heartbeat_write_p95_seconds",
        "p95 of the heartbeat write latency.",
        "gauge",
        one(format!(
            "{:.3}",
            t.heartbeat_p95_ms.load(Relaxed) as f64 / 1000.0
        )),
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn serve(
    addr: SocketAddr,
    progress: Arc<Progress>,
    throttle: Arc<Throttle>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("metrics: http://{addr}/metrics");
    loop {
        let (mut s, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = stop.cancelled() => return Ok(()),
        };
        let body = render(&progress, &throttle);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
