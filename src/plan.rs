//! The plan: what `--execute` would do, worked out without changing anything.
//!
//! The ALTER is validated for real: applied to an empty clone of the table (`<t>_zdm_prb`,
//! created with `CREATE TABLE ... LIKE`), first with `ALGORITHM=INSTANT`, then
//! `ALGORITHM=INPLACE, LOCK=NONE`, then plainly (COPY). The first that the server accepts is the
//! classification; if none is accepted the ALTER is invalid and the server's reason is shown.
//! The clone's columns and keys give the column mapping and the key shared by both tables.
//! A short timed sample copy into the clone (in `READ COMMITTED`, a non-locking read) estimates
//! the copy time, and fails early on data the new schema cannot hold.
//!
//! Invariant: the clone is dropped on every path out of [`probe`] — success, error, or
//! cancellation — and its statements are kept out of the binlog when the user may do so
//! (`sql_log_bin = 0`), so a dry run leaves nothing behind, not even on replicas.

use std::fmt::Write as _;
use std::time::Instant;

use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::conn::ServerInfo;
use crate::ddl::{column_mapping, AlterSpec, MappedColumn, TableNames};
use crate::inspect::{IndexInfo, Preflight, TableInfo};
use crate::key_compat::{fixed_offset_zone, order_changed};
use crate::sql::{ident_list, qualified, quote_ident, server_code, server_message};

/// Rows copied into the clone to time the copy.
pub const SAMPLE_ROWS: u64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the server rejects the ALTER on an empty copy of the table: {reason}. Fix --alter")]
    InvalidAlter { reason: String },
    #[error("after the ALTER, the new table shares no primary key or unique key over NOT NULL columns with `{table}` ({detail}). zdm-ost identifies rows by a key both tables have: keep the primary key, or keep a unique key over NOT NULL columns")]
    NoSharedKey { table: String, detail: String },
    #[error("the ALTER changes how every key that could identify rows of `{table}` compares: {detail}. A range or a lookup by such a key would mean different rows in the original and the new table. Change the key's type, charset or collation in its own step (a native ALTER), or keep a primary or unique key over NOT NULL columns that this ALTER leaves as it is, which zdm-ost then uses")]
    KeyOrderChanged { table: String, detail: String },
    #[error("the key {index} of `{table}` has the TIMESTAMP column `{column}`, and the server's time zone ({zone}) has daylight saving: one local hour a year names two instants, so rows could not be found by key. Use another unique key over NOT NULL columns, or run on a server whose time_zone is UTC or a fixed offset such as '+05:00'")]
    TimestampKeyZone {
        table: String,
        index: String,
        column: String,
        zone: String,
    },
    #[error("the server cannot copy the definition of `{table}` under its sql_mode: {reason}. A native ALTER TABLE of it fails the same way; fix the table's definition first (for example its DEFAULT), in a session whose sql_mode allows the old one")]
    DefinitionRejected { table: String, reason: String },
    #[error("after the ALTER the new table has column(s) `{columns}` of the same name as the original's, but zdm-ost would not copy their values: it may have misread the ALTER, and every row would lose them. Nothing was changed. Write the ALTER without IF EXISTS/IF NOT EXISTS on these columns, or run it as a native ALTER")]
    Namesake { columns: String },
    #[error("copying a sample of rows into a copy of the table with the new schema failed: {reason}. The migration would fail the same way: fix the data or the ALTER first")]
    SampleCopy { reason: String },
    #[error("table {name} already exists: another zdm-ost run on this table may be planning now. If none is, DROP TABLE {name} and run again")]
    ProbeExists { name: String },
    #[error("{what} failed: {reason}")]
    Query { what: &'static str, reason: String },
    #[error(transparent)]
    Preflight(#[from] crate::inspect::PreflightError),
    #[error(transparent)]
    Native(crate::native_check::CheckError),
    #[error("cancelled")]
    Cancelled,
}

fn q(what: &'static str) -> impl FnOnce(mysql_async::Error) -> PlanError {
    move |e| PlanError::Query {
        what,
        reason: server_message(&e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Algorithm {
    /// Metadata only.
    Instant,
    /// Changed in place without blocking writes (may still rebuild the table).
    Inplace,
    /// Only as a full table copy that blocks writes.
    Copy,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Instant => "INSTANT",
            Algorithm::Inplace => "INPLACE",
            Algorithm::Copy => "COPY",
        })
    }
}

/// Whether the ghost's secondary indexes are built after the copy instead of row by row during
/// it (`--defer-indexes`).
///
/// Inserting rows into a B-tree in an order unrelated to the key (any secondary index, copied
/// in primary-key order) costs the server far more than one sorted build at the end: measured
/// here, 1M rows copied in 13.9 s with a secondary index kept, 6.8 s + 1.5 s for the build
/// without. The price is paid at the end, twice. Replicas replay the build as one statement, and
/// replication waits behind it for about as long as it took on the primary. And on the primary
/// the build, then the checksum, read the tables in bulk: if the buffer pool cannot hold the
/// original and the ghost, those reads evict dirty pages and every writer waits for their
/// flush. `Auto` defers only when the replicas' pause stays within the lag the user accepts
/// (`--max-lag-millis`) and the buffer pool is at least [`AUTO_POOL_PER_TABLE`] times the
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeferIndexes {
    /// Defer when rows x deferrable indexes <= [`AUTO_ROWS_PER_LAG_SECOND`] x max lag.
    Auto {
        max_lag_secs: f64,
    },
    Always,
    Never,
}

/// Index entries one second of replica lag pays for in `DeferIndexes::Auto`: a sorted build of
/// one BIGINT index over 1M rows took 1.3-1.5 s on this project's 2-core test machine.
pub const AUTO_ROWS_PER_LAG_SECOND: f64 = 1_000_000.0;

/// How many times the table's size (data + indexes) the buffer pool must be for
/// `DeferIndexes::Auto` to defer: room for the original and the ghost, twice over. Measured on
/// the benchmark's 1M-row table (280 MiB) under a 500 txn/s load, 2 cores: with a 2 GiB pool
/// (7x) the deferred build cost the load nothing (p99 14-16 ms, max 27-49 ms in three runs) and
/// saved a third of the run; with 512 MiB (1.8x) it stalled writers for 330-450 ms, where
/// keeping the index stalled them 120-165 ms. The line between 1.8x and 7x is a judgement.
pub const AUTO_POOL_PER_TABLE: u64 = 4;

/// Which of the ghost's indexes to build after the copy, and why (for the plan).
/// `table_bytes` is the original's data + indexes; `buffer_pool` the server's, if known.
fn deferred_indexes(
    ghost: &TableInfo,
    rows: u64,
    table_bytes: u64,
    buffer_pool: Option<u64>,
    defer: DeferIndexes,
) -> (Vec<String>, String) {
    let candidates: Vec<String> = ghost
        .indexes
        .iter()
        .filter(|ix| !ix.unique && ix.name != "PRIMARY" && ix.kind.eq_ignore_ascii_case("BTREE"))
        .map(|ix| ix.name.clone())
        .collect();
    if candidates.is_empty() {
        return (candidates, "no secondary index to defer".into());
    }
    let entries = rows as f64 * candidates.len() as f64;
    match defer {
        DeferIndexes::Never => (Vec::new(), "kept during the copy (--defer-indexes never)".into()),
        DeferIndexes::Always => (candidates, "built after the copy (--defer-indexes always)".into()),
        DeferIndexes::Auto { max_lag_secs } if entries <= AUTO_ROWS_PER_LAG_SECOND * max_lag_secs => {
            let needed = table_bytes.saturating_mul(AUTO_POOL_PER_TABLE);
            match buffer_pool {
                Some(pool) if pool >= needed => (
                    candidates,
                    format!(
                        "built after the copy: about {entries:.0} index entries, which replicas replay in roughly {:.1} s (within --max-lag-millis), and the buffer pool ({}) holds the table and its copy",
                        entries / AUTO_ROWS_PER_LAG_SECOND,
                        human_bytes(pool)
                    ),
                ),
                Some(pool) => (
                    Vec::new(),
                    format!(
                        "kept during the copy: the buffer pool ({}) is under {AUTO_POOL_PER_TABLE}x the table ({}), so building them at the end would evict pages the application's writes need (--defer-indexes always defers anyway)",
                        human_bytes(pool),
                        human_bytes(table_bytes)
                    ),
                ),
                None => (
                    Vec::new(),
                    "kept during the copy: the buffer pool size could not be read (--defer-indexes always defers anyway)".into(),
                ),
            }
        }
        DeferIndexes::Auto { .. } => (
            Vec::new(),
            format!(
                "kept during the copy: building {} index(es) over about {rows} rows at the end would hold replicas back for about {:.0} s, over --max-lag-millis (--defer-indexes always defers anyway)",
                candidates.len(),
                entries / AUTO_ROWS_PER_LAG_SECOND
            ),
        ),
    }
}

/// The key that identifies rows in both tables and drives the chunked copy.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkKey {
    pub original_index: String,
    pub ghost_index: String,
    /// Column names in the original table, in index order.
    pub columns: Vec<String>,
    /// The same columns' names in the new table.
    pub ghost_columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub sample_rows: u64,
    pub sample_seconds: f64,
    pub rows_per_second: Option<f64>,
    pub copy_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub host: String,
    pub server: ServerInfo,
    pub database: String,
    pub table: String,
    pub alter: String,
    /// The ALTER's `AUTO_INCREMENT = n` table option, if any.
    pub auto_increment: Option<u64>,
    pub names: TableNames,
    pub data_bytes: u64,
    pub index_bytes: u64,
    pub rows_estimate: u64,
    pub chunk_key: ChunkKey,
    pub mapping: Vec<MappedColumn>,
    pub dropped_columns: Vec<String>,
    pub algorithm: Algorithm,
    pub replicas: Vec<crate::inspect::ReplicaReport>,
    pub long_transactions: Vec<crate::inspect::LongTransaction>,
    pub estimate: Estimate,
    /// The copy checked against the server's own ALTER on a sample ([`crate::native_check`]).
    pub native_check: Option<crate::native_check::NativeCheck>,
    /// Secondary indexes of the ghost built after the copy (`--defer-indexes`).
    pub deferred_indexes: Vec<String>,
    /// Why they are deferred or kept.
    pub defer_note: String,
    /// The server's `innodb_buffer_pool_size`, if it could be read.
    pub buffer_pool_bytes: Option<u64>,
    pub steps: Vec<String>,
    pub warnings: Vec<String>,
    /// The ghost table as the clone showed it (columns and keys after the ALTER).
    #[serde(skip)]
    pub ghost: TableInfo,
    #[serde(skip)]
    pub original: TableInfo,
}

/// What the probe clone taught us.
pub struct Probe {
    pub algorithm: Algorithm,
    pub ghost: TableInfo,
    pub mapping: Vec<MappedColumn>,
    pub chunk_key: ChunkKey,
    pub estimate: Estimate,
    /// What the copy statement was checked against the server's own ALTER on (`None`: the
    /// check could not run; a warning says why).
    pub native: Option<crate::native_check::NativeCheck>,
    pub warnings: Vec<String>,
}

/// Builds and drops the probe clone; see the module docs.
pub async fn probe(
    conn: &mut Conn,
    endpoint: &crate::conn::Endpoint,
    db: &str,
    names: &TableNames,
    spec: &AlterSpec,
    original: &TableInfo,
    cancel: &CancellationToken,
) -> Result<Probe, PlanError> {
    let probe = qualified(db, &names.probe);
    // Keep the clone out of the binlog where allowed; it is gone again at the end anyway.
    let unlogged = conn.query_drop("SET SESSION sql_log_bin = 0").await.is_ok();
    let created = conn
        .query_drop(format!(
            "CREATE /* zdm-ost */ TABLE {probe} LIKE {}",
            qualified(db, &names.original)
        ))
        .await;
    let was_created = created.is_ok();
    let result = match created {
        Err(e) if server_code(&e) == Some(1050) => Err(PlanError::ProbeExists {
            name: probe.clone(),
        }),
        // an invalid DEFAULT (1067) or other definition the server's sql_mode rejects now
        Err(e) if matches!(server_code(&e), Some(1067) | Some(1292) | Some(1101)) => {
            Err(PlanError::DefinitionRejected {
                table: names.original.clone(),
                reason: server_message(&e),
            })
        }
        Err(e) => Err(q("creating the probe table")(e)),
        Ok(()) => tokio::select! {
            r = probe_inner(conn, db, names, spec, original) => r,
            _ = cancel.cancelled() => Err(PlanError::Cancelled),
        },
    };
    if was_created {
        // A cancelled statement may have left the connection mid-result: use a fresh one if
        // this one cannot drop the table.
        let drop_sql = format!("DROP /* zdm-ost */ TABLE IF EXISTS {probe}");
        if let Err(e) = conn.query_drop(&drop_sql).await {
            tracing::warn!(
                "could not drop {probe} on the planning connection ({e}); retrying on a new one"
            );
            let dropped = match endpoint.connect().await {
                Ok(mut c) => c
                    .query_drop(&drop_sql)
                    .await
                    .map_err(|e| server_message(&e)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = dropped {
                tracing::error!(
                    "could not drop the probe table {probe}: {e}. Drop it by hand: {drop_sql}"
                );
            }
        }
    }
    if unlogged {
        let _ = conn.query_drop("SET SESSION sql_log_bin = 1").await;
    }
    result
}

async fn probe_inner(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    spec: &AlterSpec,
    original: &TableInfo,
) -> Result<Probe, PlanError> {
    let probe = qualified(db, &names.probe);
    let mut algorithm = None;
    for (alg, suffix) in [
        (Algorithm::Instant, ", ALGORITHM=INSTANT"),
        (Algorithm::Inplace, ", ALGORITHM=INPLACE, LOCK=NONE"),
    ] {
        match conn
            .query_drop(format!(
                "ALTER /* zdm-ost */ TABLE {probe} {}{suffix}",
                spec.body
            ))
            .await
        {
            Ok(()) => {
                algorithm = Some(alg);
                break;
            }
            // "not supported for this operation": try the next algorithm
            Err(e) if matches!(server_code(&e), Some(1845) | Some(1846) | Some(4092)) => continue,
            // Anything else: let the plain ALTER below give the real reason.
            Err(_) => break,
        }
    }
    let algorithm = match algorithm {
        Some(a) => a,
        None => {
            conn.query_drop(format!("ALTER /* zdm-ost */ TABLE {probe} {}", spec.body))
                .await
                .map_err(|e| PlanError::InvalidAlter {
                    reason: server_message(&e),
                })?;
            Algorithm::Copy
        }
    };
    let ghost = TableInfo::read(conn, db, &names.probe)
        .await?
        .ok_or_else(|| PlanError::InvalidAlter {
            reason: "the ALTER removed or renamed the table".into(),
        })?;
    let old_cols: Vec<String> = original.columns.iter().map(|c| c.name.clone()).collect();
    let new_cols: Vec<String> = ghost
        .columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| c.name.clone())
        .collect();
    let mapping = column_mapping(&old_cols, &new_cols, spec);
    let namesakes = crate::ddl::unmapped_namesakes(&mapping, &old_cols, spec);
    if !namesakes.is_empty() {
        return Err(PlanError::Namesake {
            columns: namesakes.join("`, `"),
        });
    }
    let chunk_key = shared_key(original, &ghost, &mapping)?;

    // A timed sample copy through the same kind of statement the copier runs.
    let copied: Vec<&MappedColumn> = mapping.iter().filter(|m| m.source.is_some()).collect();
    let targets: Vec<&str> = copied.iter().map(|m| m.target.as_str()).collect();
    let sources: Vec<&str> = copied.iter().filter_map(|m| m.source.as_deref()).collect();
    let (columns, values) =
        crate::resync::insert_lists(&targets, &sources, &filled_columns(&mapping, &ghost));
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(q("setting the isolation level"))?;
    let sample = format!(
        "INSERT /* zdm-ost */ INTO {probe} ({columns}) SELECT {values} FROM {} FORCE INDEX ({}) ORDER BY {} LIMIT {SAMPLE_ROWS}",
        qualified(db, &names.original),
        quote_ident(&chunk_key.original_index),
        ident_list(&chunk_key.columns),
    );
    let started = Instant::now();
    conn.query_drop(&sample)
        .await
        .map_err(|e| PlanError::SampleCopy {
            reason: server_message(&e),
        })?;
    let sample_seconds = started.elapsed().as_secs_f64();
    let sample_rows = conn.affected_rows();
    let rows_per_second = (sample_rows > 0).then(|| sample_rows as f64 / sample_seconds.max(1e-6));
    let estimate = Estimate {
        sample_rows,
        sample_seconds,
        rows_per_second,
        copy_seconds: rows_per_second.map(|r| original.rows_estimate as f64 / r),
    };
    let stored: Vec<String> = original
        .columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| c.name.clone())
        .collect();
    let insert =
        format!("INSERT /* zdm-ost */ INTO {probe} ({columns}) SELECT {values} FROM {{source}}");
    let mut warnings = Vec::new();
    let native = match crate::native_check::check(
        conn,
        db,
        &names.original,
        &names.probe,
        spec,
        &insert,
        &chunk_key.columns,
        &chunk_key.ghost_columns,
        &stored,
    )
    .await
    {
        Ok(c) => Some(c),
        Err(e @ crate::native_check::CheckError::Query { .. }) => {
            warnings.push(format!(
                "values not checked against the server's own ALTER: {e}"
            ));
            None
        }
        Err(e) => return Err(PlanError::Native(e)),
    };
    Ok(Probe {
        algorithm,
        ghost,
        mapping,
        chunk_key,
        estimate,
        native,
        warnings,
    })
}

/// New columns (no source) that are NOT NULL without a DEFAULT, each with the value a native
/// ALTER gives existing rows. The ghost's INSERTs name them with that value: left out, they
/// fail the insert under zdm-ost's strict `sql_mode` ("Field 'x' doesn't have a default
/// value"), where `ALTER TABLE ... ADD COLUMN x INT NOT NULL` fills in 0.
pub fn filled_columns(mapping: &[MappedColumn], ghost: &TableInfo) -> Vec<(String, String)> {
    mapping
        .iter()
        .filter(|m| m.source.is_none())
        .filter_map(|m| {
            let literal = ghost.column(&m.target)?.implicit_default.clone()?;
            Some((m.target.clone(), literal))
        })
        .collect()
}

/// The first candidate key of the original whose columns, renamed as the mapping says, form a
/// candidate key of the new table too.
fn shared_key(
    original: &TableInfo,
    ghost: &TableInfo,
    mapping: &[MappedColumn],
) -> Result<ChunkKey, PlanError> {
    let target_of = |col: &str| {
        mapping
            .iter()
            .find(|m| {
                m.source
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(col))
            })
            .map(|m| m.target.clone())
    };
    let set = |cols: &[String]| {
        let mut v: Vec<String> = cols.iter().map(|c| c.to_lowercase()).collect();
        v.sort();
        v
    };
    let ghost_keys: Vec<&IndexInfo> = ghost.candidate_keys();
    let mut changed = Vec::new();
    // the same key in the ghost first; failing that, a ghost key that starts with it (`DROP
    // PRIMARY KEY, ADD PRIMARY KEY (id, i)`): the original's key is unique, every ghost row is
    // a copy of an original row, so it names one ghost row too, and the ghost key's prefix
    // finds it by index
    for extended in [false, true] {
        for key in original.candidate_keys() {
            let Some(mapped) = key
                .columns
                .iter()
                .map(|c| target_of(c))
                .collect::<Option<Vec<String>>>()
            else {
                continue;
            };
            let fits = |gk: &&&IndexInfo| {
                if extended {
                    gk.columns.len() > mapped.len()
                        && set(&gk.columns[..mapped.len()]) == set(&mapped)
                } else {
                    set(&gk.columns) == set(&mapped)
                }
            };
            let Some(gk) = ghost_keys.iter().find(fits) else {
                continue;
            };
            let reasons: Vec<String> = key
                .columns
                .iter()
                .zip(&mapped)
                .filter_map(|(o, g)| order_changed(original.column(o)?, ghost.column(g)?))
                .collect();
            if !reasons.is_empty() {
                let why = format!("{} ({})", key.name, reasons.join(", "));
                if !changed.contains(&why) {
                    changed.push(why);
                }
                continue;
            }
            return Ok(ChunkKey {
                original_index: key.name.clone(),
                ghost_index: gk.name.clone(),
                columns: key.columns.clone(),
                ghost_columns: mapped,
            });
        }
    }
    if !changed.is_empty() {
        return Err(PlanError::KeyOrderChanged {
            table: original.table.clone(),
            detail: changed.join("; "),
        });
    }
    let describe = |keys: Vec<&IndexInfo>| {
        keys.iter()
            .map(|k| format!("{}({})", k.name, k.columns.join(",")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Err(PlanError::NoSharedKey {
        table: original.table.clone(),
        detail: format!(
            "original keys: {}; new keys: {}",
            describe(original.candidate_keys()),
            if ghost_keys.is_empty() {
                "none".to_string()
            } else {
                describe(ghost_keys)
            }
        ),
    })
}

impl Plan {
    pub fn new(
        host: String,
        spec: &AlterSpec,
        names: TableNames,
        pre: Preflight,
        probe: Probe,
        defer: DeferIndexes,
    ) -> Plan {
        let t = &names.original;
        let dropped_columns = pre
            .table
            .columns
            .iter()
            .filter(|c| {
                !probe
                    .mapping
                    .iter()
                    .any(|m| m.source.as_deref() == Some(&c.name))
            })
            .map(|c| c.name.clone())
            .collect();
        let integer_key = pre.table.integer_key(&probe.chunk_key.columns);
        let (deferred_indexes, defer_note) = deferred_indexes(
            &probe.ghost,
            pre.table.rows_estimate,
            pre.table.data_bytes + pre.table.index_bytes,
            pre.buffer_pool_bytes,
            defer,
        );
        let mut steps = vec![
            format!(
                "create {} with the ALTER applied, and {} for heartbeats and cut-over sentinels",
                names.ghost, names.changelog
            ),
            "start reading the binlog at the current position, before any row is copied".to_string(),
            format!(
                "apply every change to {t} onto {} by key (changed keys re-read from {t} with NOWAIT locking reads)",
                names.ghost
            ),
            format!(
                "copy rows in chunks of {} ranges ({}), each chunk one short transaction {}",
                probe.chunk_key.original_index,
                probe.chunk_key.columns.join(", "),
                if integer_key {
                    "reading a consistent snapshot (no row locks); changes to a range wait until its chunk has committed"
                } else {
                    "with NOWAIT locking reads"
                }
            ),
            "checksum both tables chunk by chunk at a consistent point; repair or stop on a difference (unless --skip-checksum)".to_string(),
            format!(
                "catch up with the binlog, then cut over: lock {t} briefly, apply the last changes, atomically RENAME {t} TO {}, {} TO {t}",
                names.old, names.ghost
            ),
            format!("keep the old table as {}, drop {}", names.old, names.changelog),
        ];
        if !deferred_indexes.is_empty() {
            steps[0] = format!(
                "create {} with the ALTER applied, and {} for heartbeats and cut-over sentinels; once the binlog stream is live, drop its secondary index(es) {} from it",
                names.ghost,
                names.changelog,
                deferred_indexes.join(", "),
            );
            steps.insert(
                5,
                format!(
                    "build {} on {} in one online ALTER (ALGORITHM=INPLACE, LOCK=NONE) while changes keep being applied; replicas replay it as one statement",
                    deferred_indexes.join(", "),
                    names.ghost,
                ),
            );
        }
        let mut warnings = pre.warnings;
        warnings.extend(probe.warnings);
        if probe.algorithm == Algorithm::Instant {
            warnings.push(
                "the server can make this change INSTANTly (metadata only): --execute runs it natively (--no-attempt-instant-ddl copies instead)".into(),
            );
        }
        Plan {
            host,
            server: pre.server,
            database: pre.table.db.clone(),
            table: t.clone(),
            alter: spec.body.clone(),
            auto_increment: spec.auto_increment,
            names,
            data_bytes: pre.table.data_bytes,
            index_bytes: pre.table.index_bytes,
            rows_estimate: pre.table.rows_estimate,
            chunk_key: probe.chunk_key,
            mapping: probe.mapping,
            dropped_columns,
            algorithm: probe.algorithm,
            replicas: pre.replicas,
            long_transactions: pre.long_transactions,
            estimate: probe.estimate,
            native_check: probe.native,
            buffer_pool_bytes: pre.buffer_pool_bytes,
            deferred_indexes,
            defer_note,
            steps,
            warnings,
            ghost: probe.ghost,
            original: pre.table,
        }
    }

    /// The plan as text for a person.
    pub fn render(&self, dry_run: bool) -> String {
        let mut s = String::new();
        if dry_run {
            let _ = writeln!(s, "zdm-ost plan (dry run: nothing was changed)");
        } else {
            let _ = writeln!(s, "zdm-ost plan (executing)");
        }
        let _ = writeln!(
            s,
            "  server:       {} at {} ({})",
            self.server, self.host, self.server.hostname
        );
        let _ = writeln!(
            s,
            "  table:        {}",
            qualified(&self.database, &self.table)
        );
        let _ = writeln!(s, "  alter:        {}", self.alter);
        let _ = writeln!(
            s,
            "  size:         {} data + {} index, about {} rows (buffer pool {})",
            human_bytes(self.data_bytes),
            human_bytes(self.index_bytes),
            self.rows_estimate,
            self.buffer_pool_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "unknown".into())
        );
        let _ = writeln!(
            s,
            "  chunk key:    {} ({})",
            self.chunk_key.original_index,
            self.chunk_key.columns.join(", ")
        );
        let _ = writeln!(
            s,
            "  class:        {} (as the server would run this ALTER natively)",
            self.algorithm
        );
        let _ = writeln!(s, "  columns:");
        for m in &self.mapping {
            match &m.source {
                Some(src) if src == &m.target => {
                    let _ = writeln!(s, "    {} <- {}", m.target, src);
                }
                Some(src) => {
                    let _ = writeln!(s, "    {} <- {} (renamed)", m.target, src);
                }
                None => {
                    let column = self.ghost.column(&m.target);
                    match column.and_then(|c| c.implicit_default.as_ref().map(|v| (c, v))) {
                        Some((c, v)) => {
                            // an ENUM is filled by the index 1: say what that is
                            let v = if c.column_type.to_ascii_lowercase().starts_with("enum(") {
                                "its first ENUM member"
                            } else {
                                v.as_str()
                            };
                            let _ = writeln!(
                                s,
                                "    {} (new, NOT NULL without a DEFAULT: existing rows get {v}, as a native ALTER gives them)",
                                m.target
                            );
                        }
                        None => {
                            let _ = writeln!(s, "    {} (new; takes its default)", m.target);
                        }
                    }
                }
            }
        }
        for d in &self.dropped_columns {
            let _ = writeln!(s, "    {d} (dropped)");
        }
        let _ = writeln!(s, "  replicas:");
        if self.replicas.is_empty() {
            let _ = writeln!(s, "    none given (--replica HOST:PORT)");
        }
        for r in &self.replicas {
            match (&r.problem, r.lag_seconds) {
                (Some(p), _) => {
                    let _ = writeln!(s, "    {}: {p}", r.addr);
                }
                (None, Some(l)) => {
                    let _ = writeln!(s, "    {}: replicating, {l} s behind", r.addr);
                }
                (None, None) => {
                    let _ = writeln!(s, "    {}: replicating, lag unknown", r.addr);
                }
            }
        }
        let _ = writeln!(
            s,
            "  transactions open over {} s:",
            crate::inspect::LONG_TRX_SECONDS
        );
        if self.long_transactions.is_empty() {
            let _ = writeln!(s, "    none");
        }
        for t in &self.long_transactions {
            let _ = writeln!(
                s,
                "    id {} user {} open {} s: {}",
                t.id,
                t.user,
                t.seconds,
                t.statement.as_deref().unwrap_or("(idle in transaction)")
            );
        }
        let _ = writeln!(s, "  indexes:      {}", self.defer_note);
        let e = &self.estimate;
        match (e.rows_per_second, e.copy_seconds) {
            (Some(r), Some(c)) => {
                let _ = writeln!(
                    s,
                    "  estimate:     copy about {} ({} sample rows in {:.0} ms, {:.0} rows/s), plus catching up",
                    human_secs(c),
                    e.sample_rows,
                    e.sample_seconds * 1000.0,
                    r
                );
            }
            _ => {
                let _ = writeln!(s, "  estimate:     nothing to copy (the table is empty)");
            }
        }
        if let Some(n) = &self.native_check {
            let _ = writeln!(s, "  values:       {}", n.describe());
        }
        let _ = writeln!(
            s,
            "  {}",
            if dry_run {
                "--execute would:"
            } else {
                "steps:"
            }
        );
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(s, "    {}. {step}", i + 1);
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        s
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!(
            "{:.0} h {:.0} min",
            (s / 3600.0).floor(),
            (s % 3600.0) / 60.0
        )
    }
}

/// Preflight, probe, plan: what a dry run does, and what `--execute` does first.
pub async fn prepare(
    conn: &mut Conn,
    cfg: &crate::cli::Config,
    names: &TableNames,
    spec: &AlterSpec,
    resuming: bool,
    cancel: &CancellationToken,
) -> Result<Plan, crate::Error> {
    let pre = tokio::select! {
        r = crate::inspect::preflight(conn, cfg, names, resuming) => r?,
        _ = cancel.cancelled() => return Err(crate::Error::Cancelled),
    };
    let probe = probe(
        conn,
        &cfg.primary,
        &cfg.database,
        names,
        spec,
        &pre.table,
        cancel,
    )
    .await?;
    timestamp_key_zone(conn, &pre.table, &probe.chunk_key).await?;
    Ok(Plan::new(
        cfg.primary.to_string(),
        spec,
        names.clone(),
        pre,
        probe,
        cfg.defer_indexes,
    ))
}

/// Refuses a TIMESTAMP column in the row key when the server's time zone has daylight saving
/// (see [`crate::key_compat`]).
async fn timestamp_key_zone(
    conn: &mut Conn,
    original: &TableInfo,
    key: &ChunkKey,
) -> Result<(), PlanError> {
    let Some(column) = key.columns.iter().find(|c| {
        original
            .column(c)
            .is_some_and(|ci| ci.column_type.to_ascii_lowercase().starts_with("timestamp"))
    }) else {
        return Ok(());
    };
    let (zone, system): (String, String) = conn
        .query_first("SELECT /* zdm-ost */ @@GLOBAL.time_zone, @@system_time_zone")
        .await
        .map_err(q("reading the server's time zone"))?
        .unwrap_or_default();
    if fixed_offset_zone(&zone, &system) {
        return Ok(());
    }
    Err(PlanError::TimestampKeyZone {
        table: original.table.clone(),
        index: key.original_index.clone(),
        column: column.clone(),
        zone: if zone.eq_ignore_ascii_case("SYSTEM") {
            format!("SYSTEM, which is {system}")
        } else {
            zone
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(human_secs(2.25), "2.2 s");
        assert_eq!(human_secs(125.0), "2 min 5 s");
        assert_eq!(human_secs(7260.0), "2 h 1 min");
    }

    fn ghost_with(indexes: &[(&str, bool, &str)]) -> TableInfo {
        TableInfo {
            indexes: indexes
                .iter()
                .map(|(name, unique, kind)| crate::inspect::IndexInfo {
                    name: name.to_string(),
                    unique: *unique,
                    columns: vec!["c".into()],
                    prefix: false,
                    kind: kind.to_string(),
                })
                .collect(),
            ..TableInfo::default()
        }
    }

    #[test]
    fn auto_defers_only_with_room_in_the_buffer_pool_and_the_replicas_lag_budget() {
        const MIB: u64 = 1 << 20;
        let ghost = ghost_with(&[
            ("PRIMARY", true, "BTREE"),
            ("u", true, "BTREE"),
            ("k", false, "BTREE"),
            ("ft", false, "FULLTEXT"),
        ]);
        let auto = DeferIndexes::Auto { max_lag_secs: 1.5 };
        // the benchmark's table: 1M rows, 280 MiB, 2 GiB pool
        let (d, note) = deferred_indexes(&ghost, 1_000_000, 280 * MIB, Some(2048 * MIB), auto);
        assert_eq!(d, vec!["k"], "only non-unique B-trees are deferred");
        assert_eq!(note, "built after the copy: about 1000000 index entries, which replicas replay in roughly 1.0 s (within --max-lag-millis), and the buffer pool (2.0 GiB) holds the table and its copy");
        // the same table with a 512 MiB pool (1.8x): kept
        let (d, note) = deferred_indexes(&ghost, 1_000_000, 280 * MIB, Some(512 * MIB), auto);
        assert!(d.is_empty());
        assert_eq!(note, "kept during the copy: the buffer pool (512.0 MiB) is under 4x the table (280.0 MiB), so building them at the end would evict pages the application's writes need (--defer-indexes always defers anyway)");
        // exactly 4x is enough
        let (d, _) = deferred_indexes(&ghost, 1_000_000, 128 * MIB, Some(512 * MIB), auto);
        assert_eq!(d, vec!["k"]);
        // an unknown pool size keeps them
        let (d, note) = deferred_indexes(&ghost, 1_000, MIB, None, auto);
        assert!(d.is_empty());
        assert!(
            note.contains("the buffer pool size could not be read"),
            "{note}"
        );
        // over the lag budget, whatever the pool
        let (d, note) = deferred_indexes(&ghost, 2_000_000, MIB, Some(1 << 40), auto);
        assert!(d.is_empty());
        assert!(
            note.starts_with("kept during the copy: building 1 index(es) over about 2000000 rows"),
            "{note}"
        );
        // always and never do not look at either
        let (d, _) = deferred_indexes(&ghost, 2_000_000, 280 * MIB, None, DeferIndexes::Always);
        assert_eq!(d, vec!["k"]);
        let (d, _) = deferred_indexes(&ghost, 1, 1, Some(1 << 40), DeferIndexes::Never);
        assert!(d.is_empty());
    }
}
