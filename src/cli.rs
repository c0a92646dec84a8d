//! Command-line flags (clap), parsed into a plain [`Args`] first and then resolved into a
//! [`Config`] the rest of zdm-ost works from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::conn::Endpoint;
use crate::migration::ExecOptions;
use crate::throttle::{LoadSpec, ThrottleSettings};

/// Online schema changes for MySQL and MariaDB, without blocking the table.
///
/// zdm-ost copies the table into a ghost table with the new schema, follows ongoing changes
/// through the binlog, and swaps the tables with an atomic rename. Without --execute it is a dry
/// run: it checks everything, prints the plan, and changes nothing.
#[derive(Debug, Parser)]
#[command(name = "zdm-ost", version, about, long_about = None)]
pub struct Args {
    /// The primary's host.
    #[arg(long, env = "ZDM_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// The primary's port.
    #[arg(long, env = "ZDM_PORT", default_value_t = 3306)]
    pub port: u16,
    /// The user to connect as (on the primary and on every replica).
    #[arg(long, short = 'u', env = "ZDM_USER", default_value = "root")]
    pub user: String,
    /// The password; prefer the ZDM_PASSWORD environment variable, which other users cannot see
    /// in the process list. Never printed or logged.
    #[arg(long, env = "ZDM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The database (schema) holding the table.
    #[arg(long, short = 'd')]
    pub database: String,
    /// The table to change.
    #[arg(long, short = 't')]
    pub table: String,
    /// The body of the ALTER TABLE, e.g. "ADD COLUMN note TEXT NULL".
    #[arg(long, short = 'a')]
    pub alter: String,
    /// A replica to watch, as HOST:PORT (repeat for several).
    #[arg(long = "replica", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub replicas: Vec<(String, u16)>,
    /// Run the migration. Without it zdm-ost only plans: a dry run that changes nothing.
    #[arg(long)]
    pub execute: bool,
    /// Run even though --host is a replica or read-only: the change stays on that server alone
    /// (to try a migration on a replica; never for a replica of a primary that keeps writing
    /// the table).
    #[arg(long)]
    pub allow_on_replica: bool,
    /// Migrate a table that has foreign keys to other tables, giving them up: the new table is
    /// created without them (gh-ost's flag; a change made INSTANTly keeps them). A table other
    /// tables reference is still refused.
    #[arg(long)]
    pub discard_foreign_keys: bool,
    /// Server id of zdm-ost's binlog reader; must differ from every replica's (default: random,
    /// above 2^31, checked against the primary's replicas).
    #[arg(long, value_name = "ID")]
    pub replica_server_id: Option<u32>,
    /// Rows in the first copy chunk; later chunks adapt toward --chunk-time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pub chunk_size: u64,
    /// Copy chunks in parallel on this many connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub threads: u64,
    /// Apply changed rows on this many connections: each flush splits its keys into disjoint
    /// batches that run side by side.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub apply_threads: u64,
    /// Target time per copy chunk, in seconds.
    #[arg(long, default_value = "0.5", value_name = "SECONDS", value_parser = parse_seconds)]
    pub chunk_time: Duration,
    /// How long one cut-over lock attempt may wait (writers stall at most about this long).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub cut_over_lock_timeout_seconds: u64,
    /// Cut-over attempts before giving up (each releases everything and backs off).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub cut_over_retries: u32,
    /// Drop the old table after the cut-over instead of keeping it as <table>_zdm_old.
    #[arg(long)]
    pub ok_to_drop_table: bool,
    /// Drop leftovers of an earlier run (ghost, changelog, and a cut-over sentry) before starting.
    #[arg(long)]
    pub initially_drop_ghost_table: bool,
    /// When the change is INSTANT (metadata only), run it natively (the default).
    #[arg(long, overrides_with = "no_attempt_instant_ddl")]
    pub attempt_instant_ddl: bool,
    /// Copy the table even when the change could be made INSTANTly.
    #[arg(long, overrides_with = "attempt_instant_ddl")]
    pub no_attempt_instant_ddl: bool,
    /// Build the new table's secondary indexes after the copy, in one online ALTER, instead of
    /// row by row during it (much faster; replicas replay the build as one statement and lag
    /// behind for about as long). auto: only when that build should fit in --max-lag-millis.
    #[arg(long, value_enum, default_value_t = DeferMode::Auto)]
    pub defer_indexes: DeferMode,
    /// Continue a migration that was killed, from its checkpoint (same --alter).
    #[arg(long)]
    pub resume: bool,
    /// Do not compare the ghost with the original before the swap (not recommended).
    #[arg(long)]
    pub skip_checksum: bool,
    /// Heartbeat interval (the heartbeat measures replica lag and the primary's write latency).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub heartbeat_interval_millis: u64,
    /// Replica lag (by heartbeat) above which the copy pauses.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_lag_millis: u64,
    /// Status variables whose values pause the copy when exceeded, e.g. Threads_running=25.
    #[arg(long, value_name = "VAR=N[,VAR=N]", default_value = "")]
    pub max_load: LoadSpec,
    /// Status variables whose values abort the migration when exceeded (after a re-check),
    /// e.g. Threads_running=80.
    #[arg(long, value_name = "VAR=N[,VAR=N]", default_value = "")]
    pub critical_load: LoadSpec,
    /// How long a critical load must persist before the migration aborts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub critical_load_interval_millis: u64,
    /// Pause the copy while the p95 of the heartbeat's write latency exceeds this (off by default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_write_latency_millis: Option<u64>,
    /// While this file exists, copy and apply pause.
    #[arg(long, value_name = "PATH")]
    pub throttle_flag_file: Option<PathBuf>,
    /// While this file exists, the cut-over waits (everything stays in sync); remove it, or send
    /// `unpostpone`, to cut over.
    #[arg(long, value_name = "PATH")]
    pub postpone_cut_over_flag_file: Option<PathBuf>,
    /// When this file appears, the migration aborts cleanly.
    #[arg(long, value_name = "PATH")]
    pub panic_flag_file: Option<PathBuf>,
    /// The control socket (default: zdm-ost.<database>.<table>.sock in the temp dir).
    #[arg(long, value_name = "PATH")]
    pub serve_socket_file: Option<PathBuf>,
    /// Also serve the control commands on this TCP port of 127.0.0.1.
    #[arg(long, value_name = "PORT")]
    pub serve_tcp_port: Option<u16>,
    /// A directory of hook executables (on-startup, on-validated, on-row-copy-complete,
    /// on-before-cut-over, on-success, on-failure, on-status).
    #[arg(long, value_name = "DIR")]
    pub hooks_path: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP here, e.g. 127.0.0.1:9106.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between status lines while migrating.
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = parse_seconds)]
    pub status_interval: Duration,
    /// Print the plan (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("`{s}` is out of range (0.01 to 3600 seconds)"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` in `{s}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeferMode {
    Auto,
    Always,
    Never,
}

/// Everything a run needs, resolved from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub primary: Endpoint,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub replicas: Vec<(String, u16)>,
    pub defer_indexes: crate::plan::DeferIndexes,
    pub allow_on_replica: bool,
    pub discard_foreign_keys: bool,
}

impl From<&Args> for ExecOptions {
    fn from(a: &Args) -> Self {
        ExecOptions {
            replica_server_id: a.replica_server_id,
            chunk_size: a.chunk_size,
            chunk_time: a.chunk_time,
            cut_over_lock_timeout: Duration::from_secs(a.cut_over_lock_timeout_seconds),
            cut_over_retries: a.cut_over_retries,
            ok_to_drop_table: a.ok_to_drop_table,
            initially_drop_ghost_table: a.initially_drop_ghost_table,
            status_interval: a.status_interval,
            resume: a.resume,
            skip_checksum: a.skip_checksum,
            throttle: ThrottleSettings {
                heartbeat_interval: Duration::from_millis(a.heartbeat_interval_millis),
                max_lag: Duration::from_millis(a.max_lag_millis),
                max_load: a.max_load.clone(),
                critical_load: a.critical_load.clone(),
                critical_load_interval: Duration::from_millis(a.critical_load_interval_millis),
                max_write_latency: a.max_write_latency_millis.map(Duration::from_millis),
                throttle_flag_file: a.throttle_flag_file.clone(),
                postpone_flag_file: a.postpone_cut_over_flag_file.clone(),
                panic_flag_file: a.panic_flag_file.clone(),
            },
            socket: a.serve_socket_file.clone(),
            tcp_port: a.serve_tcp_port,
            hooks_path: a.hooks_path.clone(),
            metrics_addr: a.metrics_addr,
            progress_bar: false,
            attempt_instant_ddl: !a.no_attempt_instant_ddl,
            threads: a.threads as usize,
            apply_threads: a.apply_threads as usize,
        }
    }
}

impl From<&Args> for Config {
    fn from(a: &Args) -> Self {
        Config {
            primary: Endpoint {
                host: a.host.clone(),
                port: a.port,
                user: a.user.clone(),
                password: a.password.clone(),
            },
            database: a.database.clone(),
            table: a.table.clone(),
            alter: a.alter.clone(),
            replicas: a.replicas.clone(),
            allow_on_replica: a.allow_on_replica,
            discard_foreign_keys: a.discard_foreign_keys,
            defer_indexes: match a.defer_indexes {
                DeferMode::Auto => crate::plan::DeferIndexes::Auto {
                    max_lag_secs: a.max_lag_millis as f64 / 1000.0,
                },
                DeferMode::Always => crate::plan::DeferIndexes::Always,
                DeferMode::Never => crate::plan::DeferIndexes::Never,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_addresses_parse_or_say_why_not() {
        assert_eq!(parse_host_port("db2:3307"), Ok(("db2".into(), 3307)));
        assert_eq!(parse_host_port("[::1]:3307"), Ok(("::1".into(), 3307)));
        assert_eq!(parse_host_port("db2"), Err("`db2` is not HOST:PORT".into()));
        assert_eq!(
            parse_host_port("db2:x"),
            Err("`x` in `db2:x` is not a port number".into())
        );
    }
}
