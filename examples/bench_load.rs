//! The benchmark's write load (scripts/bench.sh): transactions at a fixed rate against a
//! sysbench-style table, each mirrored into a control table in the same transaction, so the
//! table can be compared with the control afterwards. Latency is measured from each
//! transaction's **intended** start (its slot in the fixed schedule), so a stall is counted in
//! full, not hidden by the load slowing down. `--rate 0` runs unpaced.
//!
//! Prints one JSON line at the end: transactions, errors (with samples), achieved tps, and
//! p50/p99/max latency in ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 3310)]
    port: u16,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long, default_value = "bench")]
    database: String,
    #[arg(long, default_value = "sbtest")]
    table: String,
    #[arg(long, default_value = "sbtest_ctl")]
    control: String,
    /// Transactions per second (0: as fast as possible).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// Existing ids are 1..=rows.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Stop when this file exists.
    #[arg(long)]
    stop_file: std::path::PathBuf,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let opts = OptsBuilder::default()
        .ip_or_hostname(a.host.clone())
        .tcp_port(a.port)
        .user(Some(a.user.clone()))
        .db_name(Some(a.database.clone()))
        .prefer_socket(false);
    let stop = Arc::new(AtomicBool::new(false));
    let slot = Arc::new(AtomicU64::new(0));
    let next_id = Arc::new(AtomicU64::new(a.rows + 1_000_000));
    let start = Instant::now();
    let start_wall = std::time::SystemTime::now();
    let mut handles = Vec::new();
    for w in 0..a.connections {
        let mut conn = Conn::new(opts.clone()).await.expect("connect");
        let (stop, slot, next_id) = (Arc::clone(&stop), Arc::clone(&slot), Arc::clone(&next_id));
        let (t, c, rate, rows) = (a.table.clone(), a.control.clone(), a.rate, a.rows);
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut lat = Vec::new();
            let mut slow = Vec::new();
            let mut errors = Vec::new();
            while !stop.load(Relaxed) {
                let i = slot.fetch_add(1, Relaxed);
                let intended = if rate > 0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(at.into()).await;
                    at
                } else {
                    Instant::now()
                };
                if stop.load(Relaxed) {
                    break;
                }
                // each connection works on its own residue class of ids: no conflicts among them
                let pick = |rng: &mut rand::rngs::StdRng| {
                    let v = rng.gen_range(1..=rows);
                    v - v % 8 + w % 8 + 1
                };
                let upd = pick(&mut rng);
                let del = pick(&mut rng);
                let new_id = next_id.fetch_add(1, Relaxed);
                let cval = format!("{:0>120}", rng.gen::<u64>());
                let kval: i32 = rng.gen_range(0..1_000_000);
                let r: Result<(), mysql_async::Error> = async {
                    conn.query_drop("START TRANSACTION").await?;
                    for tbl in [&t, &c] {
                        conn.exec_drop(
                            format!("UPDATE `{tbl}` SET c = ?, k = k + 1 WHERE id = ?"),
                            (&cval, upd),
                        )
                        .await?;
                        conn.exec_drop(
                            format!("INSERT INTO `{tbl}` (id, k, c, pad) VALUES (?, ?, ?, 'x')"),
                            (new_id, kval, &cval),
                        )
                        .await?;
                        if i % 10 == 0 {
                            conn.exec_drop(format!("DELETE FROM `{tbl}` WHERE id = ?"), (del,))
                                .await?;
                        }
                    }
                    conn.query_drop("COMMIT").await
                }
                .await;
                match r {
                    Ok(()) => {
                        let ms = intended.elapsed().as_secs_f64() * 1000.0;
                        lat.push(ms);
                        if ms >= 100.0 {
                            slow.push(((intended - start).as_secs_f64(), ms));
                        }
                    }
                    Err(e) => {
                        let _ = conn.query_drop("ROLLBACK").await;
                        if errors.len() < 5 {
                            errors.push(e.to_string());
                        }
                        lat.push(f64::NAN);
                    }
                }
            }
            (lat, slow, errors)
        }));
    }
    while !a.stop_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut samples = Vec::new();
    let mut slow: Vec<(f64, f64)> = Vec::new();
    let mut errors = 0u64;
    for h in handles {
        let (l, sl, e) = h.await.expect("worker");
        slow.extend(sl);
        errors += l.iter().filter(|x| x.is_nan()).count() as u64;
        lat.extend(l.into_iter().filter(|x| !x.is_nan()));
        samples.extend(e);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    // the worst latency of each second (by intended start) that had a transaction >= 100 ms,
    // keyed by UTC time of day, to line stalls up with a migration's log
    let mut stalls: std::collections::BTreeMap<String, f64> = Default::default();
    // UTC time of day of a moment `at` seconds into the run, to the millisecond
    let clock = |at: f64| {
        let t = start_wall + Duration::from_secs_f64(at);
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let secs = ms / 1000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            ms % 1000
        )
    };
    for &(at, ms) in &slow {
        let key = clock(at)[..8].to_string();
        let e = stalls.entry(key).or_insert(0.0);
        *e = e.max(ms.round());
    }
    // the slowest transaction's intended start and its end, to place it among a migration's
    // log lines more closely than its second
    let worst = slow
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|&(at, ms)| serde_json::json!({"from": clock(at), "to": clock(at + ms / 1000.0), "ms": ms.round()}));
    let q = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "transactions": lat.len() as u64 + errors,
            "errors": errors,
            "error_samples": samples,
            "tps": lat.len() as f64 / elapsed,
            "p50_ms": q(0.50),
            "p99_ms": q(0.99),
            "max_ms": lat.last().copied().unwrap_or(0.0),
            "stalls": stalls,
            "worst": worst,
        })
    );
}
