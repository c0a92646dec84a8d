//! Preflight: reads what zdm-ost needs to know about the server and the table, and refuses to
//! start when something would make the migration unsafe. Only reads; never changes anything.
//!
//! Each refusal is its own [`PreflightError`] variant whose text names the object and the fix.
//! What is worth knowing but not a reason to stop (size, row estimate, long transactions,
//! replica lag) is reported in [`Preflight`].

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use serde::Serialize;

use crate::conn::{replica_field, Endpoint, Flavor, ServerInfo, IO_RUNNING, SQL_RUNNING};
use crate::ddl::TableNames;
use crate::key::KeyColumn;
use crate::sql::{qualified, server_code, server_message};

/// Transactions open longer than this are reported.
pub const LONG_TRX_SECONDS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "{server} is not supported: zdm-ost needs MySQL 8.0 or newer, or MariaDB 10.6 or newer"
    )]
    UnsupportedServer { server: String },
    #[error("{addr} is a replica ({how}): a change made there does not reach the primary, and the primary's next writes to the table would replicate into a table of another shape. Point --host at the primary, or pass --allow-on-replica to change this server alone")]
    IsReplica { addr: String, how: String },
    #[error("{addr} is read-only ({variable}=ON), as a replica or a demoted primary is: point --host at the writable primary, or pass --allow-on-replica to change this server alone")]
    ReadOnly {
        addr: String,
        variable: &'static str,
    },
    #[error("binary logging is off on {addr} (log_bin=OFF): zdm-ost follows changes through the binlog. Start the server with log_bin enabled (it cannot be changed at runtime), binlog_format=ROW and binlog_row_image=FULL")]
    LogBinOff { addr: String },
    #[error("{setting} is {actual} on {addr}, zdm-ost needs {expected}. Fix: {fix}")]
    Setting {
        addr: String,
        setting: &'static str,
        expected: &'static str,
        actual: String,
        fix: String,
    },
    #[error("database `{db}` does not exist on {addr}: check --database")]
    DatabaseNotFound { addr: String, db: String },
    #[error("table `{db}`.`{table}` does not exist on {addr}: check --database and --table")]
    TableNotFound {
        addr: String,
        db: String,
        table: String,
    },
    #[error("`{db}`.`{table}` is a view, not a table: alter the table(s) it reads from")]
    IsView { db: String, table: String },
    #[error("`{db}`.`{table}` has column(s) `{columns}` in the pre-10.1 temporal format (COLUMN_TYPE says /* mariadb-5.3 */), whose binlog images zdm-ost cannot decode. Upgrade them first with a native ALTER TABLE ... FORCE (with mysql56_temporal_format=ON)")]
    OldTemporal {
        db: String,
        table: String,
        columns: String,
    },
    #[error("`{db}`.`{table}` is system-versioned: a copy would lose its history rows and reset their row_start/row_end (system_versioning_alter_history=KEEP does not carry them either). Change it with a native ALTER")]
    SystemVersioned { db: String, table: String },
    #[error("`{db}`.`{table}` uses the {engine} engine; zdm-ost migrates InnoDB tables only (it needs row locks and transactions). Convert it first, e.g. ALTER TABLE ... ENGINE=InnoDB, natively")]
    NotInnoDb {
        db: String,
        table: String,
        engine: String,
    },
    #[error("`{db}`.`{table}` has no primary key and no unique key over NOT NULL columns, so zdm-ost cannot copy it in chunks or follow its rows. Add a primary key first")]
    NoUsableKey { db: String, table: String },
    #[error("`{db}`.`{table}` takes part in foreign keys ({list}). zdm-ost copies into a new table and renames it: child tables would keep pointing at the old table, and the new table's constraints would be checked against the wrong rows. Drop the foreign keys first, or change the table natively")]
    ForeignKeys {
        db: String,
        table: String,
        list: String,
    },
    #[error("`{db}`.`{table}` is referenced by other tables' foreign keys ({list}): parent-side foreign keys are not supported, even with --discard-foreign-keys (the children would keep pointing at the old table). Drop them first, or change the table natively")]
    ParentForeignKeys {
        db: String,
        table: String,
        list: String,
    },
    #[error("`{db}`.`{table}` has triggers ({list}). Triggers stay with the old table at the rename and would be lost, and they may write to other tables while rows are copied. Drop them first (and recreate them after), or change the table natively")]
    Triggers {
        db: String,
        table: String,
        list: String,
    },
    #[error("table {name} already exists: {hint}")]
    Leftover { name: String, hint: String },
    #[error("user {user} lacks privileges zdm-ost needs: {missing}. Grant them, e.g.: {grant}")]
    MissingPrivileges {
        user: String,
        missing: String,
        grant: String,
    },
    #[error("reading {what} failed: {reason}")]
    Query { what: &'static str, reason: String },
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(mysql_async::Error) -> PreflightError {
    move |e| PreflightError::Query {
        what,
        reason: server_message(&e),
    }
}

/// The comment of table `db`.`name`, `None` when there is no such table: the one place that
/// asks whether a table exists.
pub async fn table_comment(
    conn: &mut Conn,
    db: &str,
    name: &str,
) -> Result<Option<String>, mysql_async::Error> {
    conn.exec_first(
        "SELECT /* zdm-ost */ TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (db, name),
    )
    .await
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    pub column_type: String,
    /// `CHARACTER_SET_NAME` and `COLLATION_NAME`, for text columns.
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub nullable: bool,
    pub generated: bool,
    /// For a NOT NULL column without a DEFAULT (not generated, not AUTO_INCREMENT): the value
    /// a native ALTER gives existing rows when it adds the column, as an SQL literal, where the
    /// type has one (see [`implicit_default`]).
    pub implicit_default: Option<String>,
}

/// The value MariaDB and MySQL put into existing rows when an ALTER adds a NOT NULL column
/// without a DEFAULT: zero, the empty string, the first ENUM member (`1`, the member's index),
/// the zero date or time. `None` for the other types: for spatial ones MariaDB's native ALTER
/// writes an empty value that no INSERT can write, so the plan's sample copy stops the run.
/// (MariaDB's JSON is a LONGTEXT: it gets `''`, which its CHECK rejects, as the native ALTER's.)
pub fn implicit_default(data_type: &str) -> Option<&'static str> {
    Some(match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
        | "numeric" | "float" | "double" | "real" | "bit" | "year" => "0",
        "enum" => "1",
        "char" | "varchar" | "binary" | "varbinary" | "tinytext" | "text" | "mediumtext"
        | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "set" => "''",
        "date" => "'0000-00-00'",
        "datetime" | "timestamp" => "'0000-00-00 00:00:00'",
        "time" => "'00:00:00'",
        "uuid" => "'00000000-0000-0000-0000-000000000000'",
        "inet4" => "'0.0.0.0'",
        "inet6" => "'::'",
        _ => return None,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    pub name: String,
    pub unique: bool,
    pub columns: Vec<String>,
    /// Some column is indexed by a prefix only (unusable as a chunking key).
    pub prefix: bool,
    /// `INDEX_TYPE`: BTREE, FULLTEXT, SPATIAL, HASH.
    pub kind: String,
}

/// A table as `information_schema` describes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableInfo {
    pub db: String,
    pub table: String,
    pub engine: String,
    pub data_bytes: u64,
    pub index_bytes: u64,
    pub rows_estimate: u64,
    pub auto_increment: Option<u64>,
    pub columns: Vec<ColumnInfo>,
    pub indexes: Vec<IndexInfo>,
}

impl TableInfo {
    /// Reads a base table; `Ok(None)` when there is none of that name.
    pub async fn read(
        conn: &mut Conn,
        db: &str,
        table: &str,
    ) -> Result<Option<TableInfo>, PreflightError> {
        type StatusRow = (
            String,
            Option<String>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        );
        let row: Option<StatusRow> = conn
            .exec_first(
                "SELECT /* zdm-ost */ TABLE_TYPE, ENGINE, DATA_LENGTH, INDEX_LENGTH, TABLE_ROWS, AUTO_INCREMENT \
                 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await
            .map_err(q("the table's status"))?;
        let Some((kind, engine, data, index, rows, ai)) = row else {
            return Ok(None);
        };
        if kind == "SYSTEM VERSIONED" {
            return Err(PreflightError::SystemVersioned {
                db: db.into(),
                table: table.into(),
            });
        }
        if kind == "VIEW" {
            return Err(PreflightError::IsView {
                db: db.into(),
                table: table.into(),
            });
        }
        type ColumnRow = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
        );
        let columns: Vec<ColumnRow> = conn
            .exec(
                "SELECT /* zdm-ost */ COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA, CHARACTER_SET_NAME, \
                 COLUMN_DEFAULT, DATA_TYPE, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await
            .map_err(q("the table's columns"))?;
        let columns: Vec<ColumnInfo> = columns
            .into_iter()
            .map(
                |(name, column_type, nullable, extra, charset, default, data_type, collation)| {
                    let extra = extra.to_ascii_uppercase();
                    let generated = extra.contains("VIRTUAL")
                        || extra.contains("STORED")
                        || extra.contains("PERSISTENT");
                    let nullable = nullable == "YES";
                    // a NOT NULL column's COLUMN_DEFAULT is NULL only when it has no DEFAULT
                    let needs_value = !nullable
                        && default.is_none()
                        && !generated
                        && !extra.contains("AUTO_INCREMENT");
                    ColumnInfo {
                        name,
                        column_type,
                        charset,
                        collation,
                        nullable,
                        generated,
                        implicit_default: needs_value
                            .then(|| implicit_default(&data_type))
                            .flatten()
                            .map(str::to_string),
                    }
                },
            )
            .collect();
        let parts: Vec<(String, u8, String, Option<u64>, String)> = conn
            .exec(
                "SELECT /* zdm-ost */ INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
                (db, table),
            )
            .await
            .map_err(q("the table's indexes"))?;
        let mut indexes: Vec<IndexInfo> = Vec::new();
        for (name, non_unique, col, sub_part, kind) in parts {
            match indexes.last_mut() {
                Some(ix) if ix.name == name => {
                    ix.columns.push(col);
                    ix.prefix |= sub_part.is_some();
                }
                _ => indexes.push(IndexInfo {
                    name,
                    unique: non_unique == 0,
                    columns: vec![col],
                    prefix: sub_part.is_some(),
                    kind,
                }),
            }
        }
        let old_temporal: Vec<&str> = columns
            .iter()
            .filter(|c| c.column_type.contains("mariadb-5.3"))
            .map(|c| c.name.as_str())
            .collect();
        if !old_temporal.is_empty() {
            return Err(PreflightError::OldTemporal {
                db: db.into(),
                table: table.into(),
                columns: old_temporal.join("`, `"),
            });
        }
        Ok(Some(TableInfo {
            db: db.into(),
            table: table.into(),
            engine: engine.unwrap_or_default(),
            data_bytes: data.unwrap_or(0),
            index_bytes: index.unwrap_or(0),
            rows_estimate: rows.unwrap_or(0),
            auto_increment: ai,
            columns,
            indexes,
        }))
    }

    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The key codec's view of these columns ([`crate::key::KeyColumn`]), in the order given.
    /// `None` when a name is not a column of the table.
    pub fn key_columns(&self, names: &[String]) -> Option<Vec<KeyColumn>> {
        names
            .iter()
            .map(|n| {
                let (ordinal, c) = self
                    .columns
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name.eq_ignore_ascii_case(n))?;
                Some(KeyColumn::new(
                    &c.name,
                    ordinal,
                    &c.column_type,
                    c.charset.as_deref(),
                    c.collation.as_deref(),
                ))
            })
            .collect()
    }

    /// Whether every one of these columns is an integer column: keys over them can be ordered
    /// here exactly as the server orders them (strings follow collations, which zdm-ost does
    /// not reproduce), so the copy can read without row locks (see `apply::Frontier`).
    pub fn integer_key(&self, names: &[String]) -> bool {
        names.iter().all(|n| {
            self.column(n).is_some_and(|c| {
                let t = c.column_type.to_ascii_lowercase();
                matches!(
                    crate::key::base_type(&t),
                    "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
                )
            })
        })
    }

    /// Keys that can drive chunking and row identity: the primary key first, then unique keys
    /// over NOT NULL columns without prefixes, fewest columns first.
    pub fn candidate_keys(&self) -> Vec<&IndexInfo> {
        let mut keys: Vec<&IndexInfo> = self
            .indexes
            .iter()
            .filter(|ix| ix.unique && !ix.prefix)
            .filter(|ix| {
                ix.columns
                    .iter()
                    .all(|c| self.column(c).is_some_and(|ci| !ci.nullable))
            })
            .collect();
        keys.sort_by_key(|ix| (ix.name != "PRIMARY", ix.columns.len()));
        keys
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LongTransaction {
    pub id: u64,
    pub user: String,
    pub seconds: u64,
    pub statement: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    pub addr: String,
    pub server: Option<String>,
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    /// `Seconds_Behind_Master`; `None` when unknown (replication stopped, or not a replica).
    pub lag_seconds: Option<u64>,
    pub problem: Option<String>,
}

/// What preflight found. Only produced when every check passed.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub server: ServerInfo,
    pub table: TableInfo,
    /// `@@innodb_buffer_pool_size`, if it could be read.
    pub buffer_pool_bytes: Option<u64>,
    pub long_transactions: Vec<LongTransaction>,
    pub replicas: Vec<ReplicaReport>,
    pub warnings: Vec<String>,
}

/// Runs every check, in order, against the primary.
pub async fn preflight(
    conn: &mut Conn,
    cfg: &crate::cli::Config,
    names: &TableNames,
    resuming: bool,
) -> Result<Preflight, PreflightError> {
    let (primary, replicas, db) = (&cfg.primary, &cfg.replicas[..], cfg.database.as_str());
    let addr = primary.to_string();
    let server = ServerInfo::read(conn)
        .await
        .map_err(q("the server version"))?;
    check_version(&server)?;
    if !cfg.allow_on_replica {
        check_writable_primary(conn, &server, &addr).await?;
    }
    check_binlog(conn, &server, &addr).await?;

    let exists: Option<String> = conn
        .exec_first(
            "SELECT /* zdm-ost */ SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (db,),
        )
        .await
        .map_err(q("the database list"))?;
    if exists.is_none() {
        return Err(PreflightError::DatabaseNotFound {
            addr,
            db: db.into(),
        });
    }
    let table = TableInfo::read(conn, db, &names.original)
        .await?
        .ok_or_else(|| PreflightError::TableNotFound {
            addr: addr.clone(),
            db: db.into(),
            table: names.original.clone(),
        })?;
    if !table.engine.eq_ignore_ascii_case("InnoDB") {
        return Err(PreflightError::NotInnoDb {
            db: db.into(),
            table: names.original.clone(),
            engine: table.engine.clone(),
        });
    }
    if table.candidate_keys().is_empty() {
        return Err(PreflightError::NoUsableKey {
            db: db.into(),
            table: names.original.clone(),
        });
    }
    check_foreign_keys_and_triggers(conn, &server, db, &names.original, cfg.discard_foreign_keys)
        .await?;
    check_leftovers(conn, db, names, resuming).await?;
    let mut warnings = Vec::new();
    crate::grants::check_privileges(conn, &server, db, &mut warnings).await?;

    let long_transactions = long_transactions(conn).await.unwrap_or_else(|e| {
        warnings.push(format!("could not list open transactions: {e}"));
        Vec::new()
    });
    let mut reports = Vec::new();
    for (host, port) in replicas {
        reports.push(replica_report(&primary.with_addr(host, *port)).await);
    }
    let dump_threads: Option<u64> = conn
        .query_first(
            "SELECT /* zdm-ost */ COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE COMMAND IN ('Binlog Dump', 'Binlog Dump GTID')",
        )
        .await
        .ok()
        .flatten();
    if let Some(n) = dump_threads {
        if n as usize > replicas.len() {
            warnings.push(format!(
                "{n} replica connection(s) read this server's binlog but {} --replica given: lag on the others is not watched",
                replicas.len()
            ));
        }
    }
    let buffer_pool_bytes: Option<u64> = conn
        .query_first("SELECT /* zdm-ost */ @@innodb_buffer_pool_size")
        .await
        .ok()
        .flatten();
    Ok(Preflight {
        server,
        table,
        buffer_pool_bytes,
        long_transactions,
        replicas: reports,
        warnings,
    })
}

fn check_version(server: &ServerInfo) -> Result<(), PreflightError> {
    let ok = match server.flavor {
        Flavor::MySql => server.version >= (8, 0, 0),
        Flavor::MariaDb => server.version >= (10, 6, 0),
    };
    if ok {
        Ok(())
    } else {
        Err(PreflightError::UnsupportedServer {
            server: server.to_string(),
        })
    }
}

/// Refuses a server that replicates from another (its replication threads running) or is
/// read-only: the ALTER would change that server alone. `SHOW [ALL] SLAVE[S] STATUS` needs a privilege
/// zdm-ost does not otherwise need (SLAVE MONITOR on MariaDB 10.5+); without it MariaDB's
/// `Slaves_running` status says whether any replication connection runs.
async fn check_writable_primary(
    conn: &mut Conn,
    server: &ServerInfo,
    addr: &str,
) -> Result<(), PreflightError> {
    // MariaDB: every replication connection, the named ones of multi-source replication too
    let status_sql = match server.flavor {
        Flavor::MariaDb => "SHOW /* zdm-ost */ ALL SLAVES STATUS",
        Flavor::MySql => server.replica_status_sql(),
    };
    match conn.query_iter(status_sql).await {
        Ok(mut result) => {
            let rows: Vec<mysql_async::Row> = result
                .collect()
                .await
                .map_err(q("the replication status"))?;
            for row in rows {
                let text = |names: &[&str]| replica_field(&row, names);
                // "Connecting" is a running IO thread that has not reached its primary yet
                let running = |names: &[&str]| {
                    text(names).is_some_and(|v| {
                        v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("connecting")
                    })
                };
                if running(IO_RUNNING) || running(SQL_RUNNING) {
                    let host = text(&["Master_Host", "Source_Host"]).unwrap_or_default();
                    let port = text(&["Master_Port", "Source_Port"]).unwrap_or_default();
                    return Err(PreflightError::IsReplica {
                        addr: addr.into(),
                        how: format!("it replicates from {host}:{port}"),
                    });
                }
            }
        }
        Err(e) if matches!(server_code(&e), Some(1227) | Some(1142)) => {
            if server.flavor == Flavor::MariaDb {
                let running: Option<(String, String)> = conn
                    .query_first("SHOW /* zdm-ost */ GLOBAL STATUS LIKE 'Slaves_running'")
                    .await
                    .map_err(q("the replication status"))?;
                if let Some((_, n)) = running.filter(|(_, n)| n.trim() != "0") {
                    return Err(PreflightError::IsReplica {
                        addr: addr.into(),
                        how: format!("Slaves_running={}", n.trim()),
                    });
                }
            }
        }
        Err(e) => return Err(q("the replication status")(e)),
    }
    let variables = match server.flavor {
        Flavor::MySql => "SELECT /* zdm-ost */ @@read_only, @@super_read_only",
        Flavor::MariaDb => "SELECT /* zdm-ost */ @@read_only, 0",
    };
    let (read_only, super_read_only): (u8, u8) = conn
        .query_first(variables)
        .await
        .map_err(q("read_only"))?
        .unwrap_or_default();
    if read_only != 0 || super_read_only != 0 {
        return Err(PreflightError::ReadOnly {
            addr: addr.into(),
            variable: if super_read_only != 0 {
                "super_read_only"
            } else {
                "read_only"
            },
        });
    }
    Ok(())
}

async fn check_binlog(
    conn: &mut Conn,
    server: &ServerInfo,
    addr: &str,
) -> Result<(), PreflightError> {
    let (log_bin, format, image): (u8, String, String) = conn
        .query_first("SELECT /* zdm-ost */ @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image")
        .await
        .map_err(q("binlog settings"))?
        .unwrap_or_default();
    if log_bin == 0 {
        return Err(PreflightError::LogBinOff { addr: addr.into() });
    }
    let reconnect = "; sessions opened before the change keep their old value, so restart long-lived application connections";
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(PreflightError::Setting {
            addr: addr.into(),
            setting: "binlog_format",
            expected: "ROW",
            actual: format,
            fix: format!(
                "SET GLOBAL binlog_format = 'ROW' (and set it in the server's config){reconnect}"
            ),
        });
    }
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(PreflightError::Setting {
            addr: addr.into(),
            setting: "binlog_row_image",
            expected: "FULL",
            actual: image,
            fix: format!("SET GLOBAL binlog_row_image = 'FULL' (and set it in the server's config){reconnect}"),
        });
    }
    if server.flavor == Flavor::MariaDb {
        let compress: Option<u8> = conn
            .query_first("SELECT /* zdm-ost */ @@global.log_bin_compress")
            .await
            .map_err(q("binlog settings"))?;
        if compress == Some(1) {
            return Err(PreflightError::Setting {
                addr: addr.into(),
                setting: "log_bin_compress",
                expected: "OFF",
                actual: "ON".into(),
                fix: "SET GLOBAL log_bin_compress = OFF (compressed row events cannot be decoded safely)".into(),
            });
        }
    }
    Ok(())
}

/// A foreign key: its name, the child table's schema and name, the parent's schema and name.
type ForeignKey = (String, String, String, String, String);

/// The table's foreign keys, and those of other tables that reference it.
///
/// Neither direction scans the server's every table if it can help it. Its own keys: a lookup
/// by schema and table name, which opens that table only. Keys that reference it: InnoDB's own
/// dictionary (`INNODB_SYS_FOREIGN`, `INNODB_FOREIGN` on MySQL), which opens no table; it needs
/// the PROCESS privilege, and names its tables in InnoDB's file-name encoding, which is the name
/// itself only for `[A-Za-z0-9_]`. Otherwise `information_schema` is scanned, which opens every
/// table and view on the server (and builds a temporary table for each view over
/// `information_schema`, such as MariaDB's `sys` schema has dozens of): slow where there are
/// many.
async fn foreign_keys(
    conn: &mut Conn,
    server: &ServerInfo,
    db: &str,
    table: &str,
) -> Result<Vec<ForeignKey>, PreflightError> {
    let mut fks =
        referential_constraints(conn, "CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?", db, table)
            .await?;
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let dictionary = match server.flavor {
        Flavor::MariaDb => "information_schema.INNODB_SYS_FOREIGN",
        Flavor::MySql => "information_schema.INNODB_FOREIGN",
    };
    let referencing: Option<Vec<(String, String, String)>> = if plain(db) && plain(table) {
        conn.exec(
            format!(
                "SELECT /* zdm-ost */ ID, FOR_NAME, REF_NAME FROM {dictionary} WHERE REF_NAME = ?"
            ),
            (format!("{db}/{table}"),),
        )
        .await
        .ok()
    } else {
        None
    };
    match referencing {
        Some(rows) => {
            let split = |s: &str| match s.split_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (String::new(), s.to_string()),
            };
            for (id, child, parent) in rows {
                let (cs, ct) = split(&child);
                let (ps, pt) = split(&parent);
                fks.push((split(&id).1, cs, ct, ps, pt));
            }
        }
        None => fks.extend(
            referential_constraints(
                conn,
                "UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?",
                db,
                table,
            )
            .await?,
        ),
    }
    // (a table referencing itself comes through both ways)
    fks.sort_by(|a, b| (&a.1, &a.2, &a.0).cmp(&(&b.1, &b.2, &b.0)));
    fks.dedup();
    Ok(fks)
}

/// `information_schema.REFERENTIAL_CONSTRAINTS` rows matching `filter` (two placeholders: a
/// schema and a table name).
async fn referential_constraints(
    conn: &mut Conn,
    filter: &str,
    db: &str,
    table: &str,
) -> Result<Vec<ForeignKey>, PreflightError> {
    conn.exec(
        format!(
            "SELECT /* zdm-ost */ CONSTRAINT_NAME, CONSTRAINT_SCHEMA, TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME \
             FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE {filter}"
        ),
        (db, table),
    )
    .await
    .map_err(q("foreign keys"))
}

async fn check_foreign_keys_and_triggers(
    conn: &mut Conn,
    server: &ServerInfo,
    db: &str,
    table: &str,
    discard_own: bool,
) -> Result<(), PreflightError> {
    let mut fks = foreign_keys(conn, server, db, table).await?;
    if discard_own {
        // the table's own foreign keys are given up (the ghost, made with CREATE TABLE ...
        // LIKE, has none); ones of other tables that reference it cannot be
        fks.retain(|(_, cs, ct, _, _)| !(cs == db && ct == table));
        if !fks.is_empty() {
            return Err(PreflightError::ParentForeignKeys {
                db: db.into(),
                table: table.into(),
                list: fks
                    .iter()
                    .map(|(name, cs, ct, rs, rt)| {
                        format!("{name}: {} -> {}", qualified(cs, ct), qualified(rs, rt))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    if !fks.is_empty() {
        let list = fks
            .iter()
            .map(|(name, cs, ct, rs, rt)| {
                format!("{name}: {} -> {}", qualified(cs, ct), qualified(rs, rt))
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PreflightError::ForeignKeys {
            db: db.into(),
            table: table.into(),
            list,
        });
    }
    let triggers: Vec<String> = conn
        .exec(
            "SELECT /* zdm-ost */ TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? ORDER BY TRIGGER_NAME",
            (db, table),
        )
        .await
        .map_err(q("triggers"))?;
    if !triggers.is_empty() {
        return Err(PreflightError::Triggers {
            db: db.into(),
            table: table.into(),
            list: triggers.join(", "),
        });
    }
    Ok(())
}

async fn check_leftovers(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    resuming: bool,
) -> Result<(), PreflightError> {
    // the checkpoint first: it says more than the ghost does
    let helpers: Vec<&String> = if resuming {
        vec![&names.old, &names.probe]
    } else {
        vec![
            &names.checkpoint,
            &names.ghost,
            &names.old,
            &names.changelog,
            &names.probe,
        ]
    };
    for name in helpers {
        let found = table_comment(conn, db, name)
            .await
            .map_err(q("leftover helper tables"))?;
        if found.is_none() {
            continue;
        }
        let full = qualified(db, name);
        let hint = if name == &names.checkpoint {
            format!(
                "it is the checkpoint of an interrupted migration of {}. Continue that migration with --resume (same --alter), or start over with --initially-drop-ghost-table",
                qualified(db, &names.original)
            )
        } else if name == &names.old {
            format!(
                "it is the old table kept by an earlier migration of {}. Once you no longer need it, DROP TABLE {full} (or rename it) and run again",
                qualified(db, &names.original)
            )
        } else {
            format!(
                "it is left over from an earlier zdm-ost run on {}, or one is running now. If none is running, rerun with --initially-drop-ghost-table (or DROP TABLE {full})",
                qualified(db, &names.original)
            )
        };
        return Err(PreflightError::Leftover { name: full, hint });
    }
    Ok(())
}

/// Transactions open longer than [`LONG_TRX_SECONDS`], oldest first.
pub async fn long_transactions(
    conn: &mut Conn,
) -> Result<Vec<LongTransaction>, mysql_async::Error> {
    let rows: Vec<(u64, Option<String>, i64, Option<String>)> = conn
        .exec(
            "SELECT /* zdm-ost */ t.trx_mysql_thread_id, p.USER, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), \
             COALESCE(t.trx_query, p.INFO) \
             FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
             WHERE t.trx_started <= NOW() - INTERVAL ? SECOND AND t.trx_mysql_thread_id <> CONNECTION_ID() \
             ORDER BY t.trx_started",
            (LONG_TRX_SECONDS,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, user, secs, statement)| LongTransaction {
            id,
            user: user.unwrap_or_else(|| "?".into()),
            seconds: secs.max(0) as u64,
            statement,
        })
        .collect())
}

/// Connects to a replica and reads its replication status. Never fails: problems are reported.
pub async fn replica_report(ep: &Endpoint) -> ReplicaReport {
    let mut report = ReplicaReport {
        addr: ep.to_string(),
        server: None,
        io_running: None,
        sql_running: None,
        lag_seconds: None,
        problem: None,
    };
    let mut conn = match ep.connect().await {
        Ok(c) => c,
        Err(e) => {
            report.problem = Some(e.to_string());
            return report;
        }
    };
    let server = match ServerInfo::read(&mut conn).await {
        Ok(s) => s,
        Err(e) => {
            report.problem = Some(server_message(&e));
            return report;
        }
    };
    report.server = Some(server.to_string());
    let row: Result<Option<Row>, _> = conn.query_first(server.replica_status_sql()).await;
    match row {
        Err(e) => {
            report.problem = Some(format!(
                "cannot read replica status: {}",
                server_message(&e)
            ))
        }
        Ok(None) => report.problem = Some("not a replica (replica status is empty)".into()),
        Ok(Some(row)) => {
            let get = |names: &[&str]| replica_field(&row, names);
            report.io_running = get(IO_RUNNING);
            report.sql_running = get(SQL_RUNNING);
            report.lag_seconds = get(&["Seconds_Behind_Master", "Seconds_Behind_Source"])
                .and_then(|s| s.parse().ok());
            if report.io_running.as_deref() != Some("Yes")
                || report.sql_running.as_deref() != Some("Yes")
            {
                report.problem = Some(format!(
                    "replication is not running (IO={}, SQL={})",
                    report.io_running.as_deref().unwrap_or("?"),
                    report.sql_running.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    let _ = conn.disconnect().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_defaults_are_those_of_a_native_add_column() {
        assert_eq!(implicit_default("INT"), Some("0"));
        assert_eq!(implicit_default("enum"), Some("1"));
        assert_eq!(implicit_default("varchar"), Some("''"));
        assert_eq!(implicit_default("datetime"), Some("'0000-00-00 00:00:00'"));
        assert_eq!(implicit_default("json"), None);
        assert_eq!(implicit_default("point"), None);
    }
}
