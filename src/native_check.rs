//! The plan's proof that zdm-ost computes what the server computes (docs/design.md, fidelity rule 3).
//!
//! zdm-ost fills the ghost with `INSERT ... SELECT`: new columns take their DEFAULT, generated
//! columns are computed, changed types are converted, all in zdm-ost's session (time zone,
//! sql_mode). The checksum compares only the columns that have a source, and compares them
//! after a cast in that same session, so a value computed differently from the server's own
//! ALTER (a DATETIME default filled in UTC on a server at +05:00) would pass it.
//!
//! So the plan checks the statement against the server itself, on a sample: the first
//! [`CHECK_ROWS`] rows by the key are copied into a session-private temporary table; the probe
//! table (the empty clone with the ALTER applied) is filled from it with the copier's statement;
//! the temporary table is then changed with the server's own ALTER; the two must agree on every
//! column of every row. Columns whose value depends on the moment it is computed (a
//! CURRENT_TIMESTAMP default, `NOW()` in a generated column) are compared to within
//! [`TIME_SLACK_SECONDS`] (a date to within a day); those with values nobody can reproduce
//! (`RAND()`, `UUID()`) are not compared, and the plan says so.

use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;

use crate::ddl::AlterSpec;
use crate::sql::{ident_list, qualified, quote_ident, server_message};

/// Rows of the sample.
pub const CHECK_ROWS: u64 = 500;
/// How far apart two computations of a time-dependent column may be.
pub const TIME_SLACK_SECONDS: u64 = 120;

/// What the check compared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NativeCheck {
    pub rows: u64,
    /// Columns compared exactly.
    pub exact: Vec<String>,
    /// Time-dependent columns, compared to within [`TIME_SLACK_SECONDS`].
    pub timed: Vec<String>,
    /// Columns not compared, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl NativeCheck {
    /// One line for the plan.
    pub fn describe(&self) -> String {
        if self.rows == 0 {
            return "not checked against the server's own ALTER (the table is empty)".into();
        }
        let mut s = format!(
            "as the server's own ALTER computes them, on a sample of {} rows ({} columns equal",
            self.rows,
            self.exact.len()
        );
        if !self.timed.is_empty() {
            s += &format!(
                "; {} within {TIME_SLACK_SECONDS} s: they take the time of the copy",
                self.timed.join(", ")
            );
        }
        s += ")";
        for (c, why) in &self.skipped {
            s += &format!("; `{c}` not compared: {why}");
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    // Differs and NativeFailed stop the plan; Query only means the check could not run
    #[error("on a sample of {rows} rows, the server's own ALTER gives other values than zdm-ost's copy in {columns} (first at {first}). zdm-ost cannot reproduce this change: run it as a native ALTER instead")]
    Differs {
        rows: u64,
        columns: String,
        first: String,
    },
    #[error("the server's own ALTER failed on a sample of the rows: {0}. The migration would fail the same way: fix the data or the ALTER first")]
    NativeFailed(String),
    #[error("checking the copy against the server's own ALTER: {what}: {reason}")]
    Query { what: &'static str, reason: String },
}

fn q(what: &'static str) -> impl Fn(mysql_async::Error) -> CheckError {
    move |e| CheckError::Query {
        what,
        reason: server_message(&e),
    }
}

/// Functions whose value depends on the moment: a column using one is compared with slack.
const TIMED: [&str; 13] = [
    "current_timestamp",
    "now(",
    "localtime",
    "sysdate",
    "curdate",
    "current_date",
    "curtime",
    "current_time",
    "utc_timestamp",
    "utc_date",
    "utc_time",
    "unix_timestamp()",
    "unix_timestamp( )",
];
/// Functions whose value nobody can compute twice.
const RANDOM: [&str; 5] = [
    "rand(",
    "uuid(",
    "uuid_short(",
    "nextval(",
    "connection_id(",
];

/// How one ghost column is compared.
enum How {
    Exact,
    Timed { date: bool },
    Skip(String),
}

fn how(default: Option<&str>, generation: Option<&str>, data_type: &str) -> How {
    let text = format!(
        "{} {}",
        default.unwrap_or_default(),
        generation.unwrap_or_default()
    )
    .to_ascii_lowercase();
    if let Some(f) = RANDOM.iter().find(|f| text.contains(*f)) {
        return How::Skip(format!(
            "computed with {}), which no two computations agree on",
            f
        ));
    }
    if TIMED.iter().any(|f| text.contains(f)) {
        return match data_type {
            "date" => How::Timed { date: true },
            "datetime" | "timestamp" => How::Timed { date: false },
            _ => How::Skip("computed from the current time".into()),
        };
    }
    How::Exact
}

/// Runs the check; see the module docs. `probe` is the empty clone with the ALTER applied,
/// `insert` the copier's `INSERT INTO probe (...) SELECT ... FROM {source}` with `{source}`
/// standing for the table it reads, `key` the new table's key columns.
#[allow(clippy::too_many_arguments)]
pub async fn check(
    conn: &mut Conn,
    db: &str,
    original: &str,
    probe: &str,
    spec: &AlterSpec,
    insert: &str,
    orig_key: &[String],
    key: &[String],
    stored: &[String],
) -> Result<NativeCheck, CheckError> {
    let nat = qualified(db, &format!("{original}_zdm_nat"));
    // a temporary table: private to this session, never in the binlog, gone with the session
    conn.query_drop(format!(
        "CREATE /* zdm-ost */ TEMPORARY TABLE {nat} LIKE {}",
        qualified(db, original)
    ))
    .await
    .map_err(q("creating the sample table"))?;
    let result = check_on(
        conn, db, original, probe, &nat, spec, insert, orig_key, key, stored,
    )
    .await;
    let _ = conn
        .query_drop(format!(
            "DROP /* zdm-ost */ TEMPORARY TABLE IF EXISTS {nat}"
        ))
        .await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn check_on(
    conn: &mut Conn,
    db: &str,
    original: &str,
    probe: &str,
    nat: &str,
    spec: &AlterSpec,
    insert: &str,
    orig_key: &[String],
    key: &[String],
    stored: &[String],
) -> Result<NativeCheck, CheckError> {
    let probe_q = qualified(db, probe);
    let cols = ident_list(stored);
    conn.query_drop(format!(
        "INSERT /* zdm-ost */ INTO {nat} ({cols}) SELECT {cols} FROM {} ORDER BY {} LIMIT {CHECK_ROWS}",
        qualified(db, original),
        ident_list(orig_key)
    ))
    .await
    .map_err(q("sampling rows"))?;
    conn.query_drop(format!("DELETE /* zdm-ost */ FROM {probe_q}"))
        .await
        .map_err(q("emptying the probe table"))?;
    conn.query_drop(insert.replace("{source}", nat))
        .await
        .map_err(q("copying the sample as zdm-ost copies"))?;
    conn.query_drop(format!("ALTER /* zdm-ost */ TABLE {nat} {}", spec.body))
        .await
        .map_err(|e| match crate::sql::server_code(&e) {
            // the data: the migration would fail on it too
            Some(1062 | 1264 | 1265 | 1292 | 1366 | 1406 | 1048 | 1690 | 4025 | 3819) => {
                CheckError::NativeFailed(server_message(&e))
            }
            // the server cannot run it on a temporary table (foreign keys, partitions...)
            _ => CheckError::Query {
                what: "the server's own ALTER on a temporary copy",
                reason: server_message(&e),
            },
        })?;
    // how each column of the new table is compared
    type Col = (String, Option<String>, Option<String>, String);
    let columns: Vec<Col> = conn
        .exec(
            "SELECT /* zdm-ost */ COLUMN_NAME, COLUMN_DEFAULT, GENERATION_EXPRESSION, DATA_TYPE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, probe),
        )
        .await
        .map_err(q("reading the new table's columns"))?;
    let mut out = NativeCheck::default();
    let mut sums = Vec::new();
    let mut compared = Vec::new();
    for (name, default, generation, data_type) in columns {
        let (p, n) = (
            format!("p.{}", quote_ident(&name)),
            format!("n.{}", quote_ident(&name)),
        );
        let differs = match how(default.as_deref(), generation.as_deref(), &data_type) {
            // byte for byte: a collation would call 'A' and 'a' equal
            How::Exact => {
                out.exact.push(name.clone());
                format!("NOT (CAST({p} AS BINARY) <=> CAST({n} AS BINARY))")
            }
            How::Timed { date } => {
                out.timed.push(name.clone());
                let slack = if date {
                    format!("ABS(DATEDIFF({p}, {n})) > 1")
                } else {
                    format!("ABS(TIMESTAMPDIFF(SECOND, {p}, {n})) > {TIME_SLACK_SECONDS}")
                };
                format!("(({p} IS NULL) <> ({n} IS NULL) OR {slack})")
            }
            How::Skip(why) => {
                out.skipped.push((name, why));
                continue;
            }
        };
        sums.push(format!("SUM({differs})"));
        compared.push(name);
    }
    let on: Vec<String> = key
        .iter()
        .map(|k| format!("p.{0} = n.{0}", quote_ident(k)))
        .collect();
    let rows: Option<mysql_async::Row> = conn
        .query_first(format!(
            "SELECT /* zdm-ost */ COUNT(*), (SELECT COUNT(*) FROM {nat}), (SELECT COUNT(*) FROM {probe_q}){} \
             FROM {probe_q} AS p JOIN {nat} AS n ON {}",
            sums.iter().map(|s| format!(", {s}")).collect::<String>(),
            on.join(" AND ")
        ))
        .await
        .map_err(q("comparing the sample"))?;
    let values: Vec<Option<u64>> = rows
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| mysql_async::from_value_opt::<u64>(v).ok())
                .collect()
        })
        .unwrap_or_default();
    let get = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
    let (joined, native_rows, copied_rows) = (get(0), get(1), get(2));
    out.rows = native_rows;
    let mut differing: Vec<String> = compared
        .iter()
        .enumerate()
        .filter(|(i, _)| get(3 + i) > 0)
        .map(|(_, c)| format!("`{c}`"))
        .collect();
    if joined != native_rows || joined != copied_rows {
        differing.insert(
            0,
            format!("the rows themselves ({copied_rows} copied, {native_rows} after the native ALTER, {joined} matched by key)"),
        );
    }
    if differing.is_empty() {
        return Ok(out);
    }
    let first = first_difference(conn, &probe_q, nat, key, &compared, &on).await;
    Err(CheckError::Differs {
        rows: native_rows,
        columns: differing.join(", "),
        first,
    })
}

/// The first differing row shown to a person: its key, and each differing value both ways.
async fn first_difference(
    conn: &mut Conn,
    probe_q: &str,
    nat: &str,
    key: &[String],
    compared: &[String],
    on: &[String],
) -> String {
    let show = |c: &String| {
        format!(
            "IF(CAST(p.{0} AS BINARY) <=> CAST(n.{0} AS BINARY), NULL, CONCAT('`{1}` zdm-ost ', QUOTE(p.{0}), ', native ', QUOTE(n.{0})))",
            quote_ident(c),
            c.replace('\'', "''")
        )
    };
    let keys: Vec<String> = key
        .iter()
        .map(|k| {
            format!(
                "CONCAT('{}=', QUOTE(p.{}))",
                k.replace('\'', "''"),
                quote_ident(k)
            )
        })
        .collect();
    let sql =
        format!(
        "SELECT /* zdm-ost */ CONCAT_WS(', ', {}, {}) FROM {probe_q} AS p JOIN {nat} AS n ON {} \
         WHERE NOT ({}) LIMIT 1",
        keys.join(", "),
        compared.iter().map(show).collect::<Vec<_>>().join(", "),
        on.join(" AND "),
        compared
            .iter()
            .map(|c| format!("CAST(p.{0} AS BINARY) <=> CAST(n.{0} AS BINARY)", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    match conn.query_first::<String, _>(sql).await {
        Ok(Some(s)) => s,
        _ => "a row of the sample".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_dependent_and_random_columns_are_told_apart() {
        assert!(matches!(
            how(Some("current_timestamp()"), None, "datetime"),
            How::Timed { date: false }
        ));
        assert!(matches!(
            how(Some("curdate()"), None, "date"),
            How::Timed { date: true }
        ));
        assert!(matches!(
            how(None, Some("unix_timestamp(`dt`)"), "bigint"),
            How::Exact
        ));
        assert!(matches!(
            how(None, Some("date_format(now(),'%H')"), "varchar"),
            How::Skip(_)
        ));
        assert!(matches!(how(Some("uuid()"), None, "uuid"), How::Skip(_)));
        assert!(matches!(how(Some("'0'"), None, "int"), How::Exact));
    }
}
