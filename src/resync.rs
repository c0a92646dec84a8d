//! The one statement pair that writes the ghost table, shared by the copier (key ranges), the
//! applier (changed keys) and the cut-over (the last keys, under the lock):
//!
//! ```sql
//! DELETE FROM ghost WHERE <keys or range, ghost column names>
//! INSERT INTO ghost (mapped columns) SELECT mapped sources FROM orig WHERE <same, original names>
//!     LOCK IN SHARE MODE NOWAIT     -- FOR SHARE NOWAIT on MySQL
//! ```
//!
//! (The copier may run the pair with a plain consistent read instead: [`Mode::Snapshot`].)
//!
//! Why this is correct (DESIGN.md, "Applying changes"): the server copies the row values itself,
//! so no value passes through zdm-ost; re-reading the current row makes the pair idempotent,
//! whatever order copy and apply run in. The read is a locking read because a transaction's
//! binlog events can be read before its commit is visible: a consistent read could then copy
//! the row's old version, while a locking read cannot pass the writer's row locks. `NOWAIT`
//! makes it fail at once (1205) instead of waiting, so zdm-ost never joins a lock-wait cycle
//! with application transactions and can never make one of them a deadlock victim.
//!
//! No `IGNORE` and a strict `sql_mode`: data the new schema cannot hold fails loudly.

use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts, Value};

use crate::key::{compare_predicate, display_key, names, read_list, Cmp, Key, KeyColumn, KeyPart};
use crate::key_compat::SharedUnique;
use crate::sql::{ident_list, qualified, quote_ident};

/// The tables of one migration and how rows map between them.
#[derive(Debug, Clone)]
pub struct Tables {
    pub db: String,
    pub orig: String,
    pub ghost: String,
    /// Key columns in the original table, in index order.
    pub key_orig: Vec<KeyColumn>,
    /// The same key columns in the ghost table (names and types as the ghost has them).
    pub key_ghost: Vec<KeyColumn>,
    /// The original table's index over the key (for FORCE INDEX).
    pub key_index: String,
    /// The ghost's index over the key: a duplicate on it is copy and apply racing, not an error.
    pub ghost_index: String,
    /// Ghost columns written, and the original columns they come from.
    pub targets: Vec<String>,
    pub sources: Vec<String>,
    /// New NOT NULL columns without a DEFAULT and the literal each gets (see
    /// [`crate::plan::filled_columns`]).
    pub fills: Vec<(String, String)>,
    /// Unique indexes the ALTER leaves as they are (see [`Selection::evict`]).
    pub shared_unique: Vec<SharedUnique>,
    /// `LOCK IN SHARE MODE NOWAIT` or `FOR SHARE NOWAIT`.
    pub share_nowait: &'static str,
    /// Taken around every resync transaction when the server serializes them anyway: with an
    /// AUTO_INCREMENT column and `innodb_autoinc_lock_mode` below 2, each `INSERT ... SELECT`
    /// holds a table-level AUTO-INC lock for the whole statement. A `NOWAIT` statement that
    /// meets it fails at once, so without this a flush kept failing against back-to-back copy
    /// chunks (measured here: 37 keys stuck for a whole 20 s copy). Waiting here instead costs
    /// nothing on the server and holds no row lock. Taken with [`Tables::turn`].
    pub insert_slot: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl Tables {
    pub fn orig_q(&self) -> String {
        qualified(&self.db, &self.orig)
    }

    pub fn ghost_q(&self) -> String {
        qualified(&self.db, &self.ghost)
    }

    /// Waits for this session's turn to insert into the ghost, when inserts take turns (see
    /// `insert_slot`); `None` when they do not. Held while [`resync`] runs in a transaction.
    pub async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.insert_slot {
            Some(s) => Some(std::sync::Arc::clone(s).lock_owned().await),
            None => None,
        }
    }

    /// The key `rows` rows on from `after` (from the first row when `None`) in the original's
    /// key order, not past `upto`: an index seek plus a short walk of the index, never an OFFSET
    /// from the table's start. `None` when fewer rows remain.
    pub async fn key_after(
        &self,
        conn: &mut Conn,
        after: Option<&Key>,
        upto: Option<&Key>,
        rows: u64,
    ) -> Result<Option<Key>, mysql_async::Error> {
        let mut preds = Vec::new();
        let mut params = Vec::new();
        for (cmp, k) in [(Cmp::Gt, after), (Cmp::Le, upto)] {
            if let Some(k) = k {
                let (p, v) = compare_predicate(&self.key_orig, cmp, k);
                preds.push(p);
                params.extend(v);
            }
        }
        let keys = ident_list(&names(&self.key_orig));
        let sql = format!(
            "SELECT /* zdm-ost */ {} FROM {} FORCE INDEX ({}) WHERE {} ORDER BY {keys} LIMIT 1 OFFSET {}",
            read_list(&self.key_orig),
            self.orig_q(),
            quote_ident(&self.key_index),
            if preds.is_empty() { "1 = 1".to_string() } else { preds.join(" AND ") },
            rows.max(1) - 1
        );
        // (binary protocol, so the key comes back typed like every other key)
        let row: Option<mysql_async::Row> = conn.exec_first(sql, params).await?;
        Ok(row.map(|r| {
            r.unwrap()
                .into_iter()
                .map(KeyPart::from_query_value)
                .collect()
        }))
    }

    fn delete_sql(&self, ghost_pred: &str) -> String {
        format!(
            "DELETE /* zdm-ost */ FROM {} WHERE {ghost_pred}",
            self.ghost_q()
        )
    }

    /// Deletes the ghost rows that hold, in the shared unique index `u`, a value that a
    /// selected row of the original holds now.
    fn evict_sql(&self, u: &SharedUnique, orig_pred: &str) -> String {
        // (no alias for the ghost: MariaDB resolves a multi-table DELETE's alias in the default
        // database, and zdm-ost's sessions have none)
        let ghost = self.ghost_q();
        let on: Vec<String> = u
            .ghost_cols
            .iter()
            .zip(&u.orig_cols)
            .map(|(g, o)| format!("{ghost}.{} = o.{}", quote_ident(g), quote_ident(o)))
            .collect();
        format!(
            "DELETE /* zdm-ost */ {ghost} FROM {ghost} JOIN (SELECT {} FROM {} WHERE {orig_pred}) AS o ON {}",
            ident_list(&u.orig_cols),
            self.orig_q(),
            on.join(" AND ")
        )
    }

    /// The shared unique index named in a duplicate-key error, if the ghost has it.
    pub fn evictable(&self, index: &str) -> Option<usize> {
        self.shared_unique
            .iter()
            .position(|u| u.ghost_index.eq_ignore_ascii_case(index))
    }

    fn insert_sql(&self, orig_pred: &str, locking: bool) -> String {
        let (columns, values) = insert_lists(&self.targets, &self.sources, &self.fills);
        format!(
            "INSERT /* zdm-ost */ INTO {} ({columns}) SELECT {values} FROM {} FORCE INDEX ({}) WHERE {orig_pred}{}",
            self.ghost_q(),
            self.orig_q(),
            quote_ident(&self.key_index),
            if locking { format!(" {}", self.share_nowait) } else { String::new() },
        )
    }
}

/// The column list of an `INSERT ... SELECT` into the ghost and the list it selects: the
/// mapped columns from their sources, then the filled columns with their literals.
pub fn insert_lists<T: AsRef<str>, S: AsRef<str>>(
    targets: &[T],
    sources: &[S],
    fills: &[(String, String)],
) -> (String, String) {
    let columns: Vec<&str> = targets
        .iter()
        .map(AsRef::as_ref)
        .chain(fills.iter().map(|(c, _)| c.as_str()))
        .collect();
    let values: Vec<String> = std::iter::once(ident_list(sources))
        .filter(|s| !s.is_empty())
        .chain(fills.iter().map(|(_, literal)| literal.clone()))
        .collect();
    (ident_list(&columns), values.join(", "))
}

/// What the rows to resync are, with the predicate for each table.
pub struct Selection {
    pub ghost_pred: String,
    pub ghost_params: Vec<Value>,
    pub orig_pred: String,
    pub orig_params: Vec<Value>,
    /// Shared unique indexes ([`Tables::shared_unique`]) on which ghost rows colliding with
    /// the selected rows are deleted first. Set on a retry after a duplicate on that index:
    /// the original cannot hold two rows with one value there, so the colliding ghost row is
    /// stale, a row whose value moved to another row (a swap of positions or slugs, in one
    /// transaction). Its change has reached, or will reach, the applier through the binlog
    /// after the read that put it in the ghost, so its next flush writes it back as it is now.
    pub evict: Vec<usize>,
}

/// How a resync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One READ COMMITTED transaction, `NOWAIT` locking read (applier; copier when changed
    /// keys are applied everywhere at once).
    Locking,
    /// One READ COMMITTED transaction reading the original through a consistent snapshot, so
    /// it takes no lock on the original's rows and never makes an application wait. Only for
    /// copy chunks whose range the applier leaves alone until the chunk has committed (see
    /// [`crate::apply::Frontier`]): a change the snapshot misses is re-synced after it.
    Snapshot,
    /// Autocommit statements without a locking clause: under `LOCK TABLES`, where a
    /// `START TRANSACTION` would silently release the table locks (cut-over).
    UnderTableLock,
}

/// Runs the pair. Returns the rows inserted into the ghost. In a transaction (`Locking`,
/// `Snapshot`) the caller holds its [`Tables::turn`].
pub async fn resync(
    conn: &mut Conn,
    t: &Tables,
    sel: Selection,
    mode: Mode,
) -> Result<u64, mysql_async::Error> {
    let Selection {
        ghost_pred,
        ghost_params,
        orig_pred,
        orig_params,
        evict,
    } = sel;
    let evict: Vec<&SharedUnique> = evict
        .iter()
        .filter_map(|i| t.shared_unique.get(*i))
        .collect();
    match mode {
        Mode::UnderTableLock => {
            conn.exec_drop(t.delete_sql(&ghost_pred), ghost_params)
                .await?;
            for u in &evict {
                conn.exec_drop(t.evict_sql(u, &orig_pred), orig_params.clone())
                    .await?;
            }
            conn.exec_drop(t.insert_sql(&orig_pred, false), orig_params)
                .await?;
            Ok(conn.affected_rows())
        }
        Mode::Locking | Mode::Snapshot => {
            // The guard rolls back if this future is dropped halfway: a half-done pair (ghost
            // rows deleted, not re-inserted) can never be committed by a later statement.
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let run = async {
                tx.exec_drop(t.delete_sql(&ghost_pred), ghost_params)
                    .await?;
                for u in &evict {
                    tx.exec_drop(t.evict_sql(u, &orig_pred), orig_params.clone())
                        .await?;
                }
                let orig_pred = match crate::failpoint::every("copy-slow-read") {
                    Some(ms) if mode == Mode::Snapshot => {
                        format!("{orig_pred} AND SLEEP({}) = 0", ms as f64 / 1000.0)
                    }
                    _ => orig_pred,
                };
                tx.exec_drop(t.insert_sql(&orig_pred, mode == Mode::Locking), orig_params)
                    .await?;
                Ok::<u64, mysql_async::Error>(tx.affected_rows())
            };
            match run.await {
                Ok(n) => {
                    if mode == Mode::Snapshot {
                        crate::failpoint::hit("copy-uncommitted").await;
                    }
                    tx.commit().await?;
                    Ok(n)
                }
                Err(e) => {
                    // Roll back now: left to the guard, the rollback would wait for the
                    // connection's next use, and the transaction's row locks with it (they
                    // stalled application writers, and failed a cut-over).
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }
    }
}

/// How a failed resync should be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A row lock held by someone else (`NOWAIT`), or a deadlock among zdm-ost's own
    /// sessions: back off and retry.
    Conflict,
    /// A duplicate on the ghost's key. Transient when copy and apply race on a range; real when
    /// two rows of the original become one key under the new schema. Retried a bounded number
    /// of times, then reported as the server reports it.
    KeyDuplicate(String),
    /// A duplicate on another unique key (the message, the index). Transient when the row it
    /// collides with is itself waiting to be re-synced; a real violation of the new key if
    /// it persists.
    Duplicate(String, String),
    /// The data cannot be written with the new schema (too long, out of range, ...).
    Data(String),
    /// The connection broke: reconnect and retry.
    Connection,
    /// Anything else: abort.
    Fatal(String),
}

pub fn classify(e: &mysql_async::Error, ghost_key_index: &str) -> Failure {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            1205 | 1213 | 3572 => Failure::Conflict,
            1062 | 1586 => {
                let on_key = s
                    .message
                    .rsplit_once("for key '")
                    .map(|(_, k)| {
                        k.trim_end_matches('\'')
                            .rsplit('.')
                            .next()
                            .unwrap_or("")
                            .to_string()
                    })
                    .unwrap_or_default();
                let message = format!("{} (error {})", s.message, s.code);
                if on_key.eq_ignore_ascii_case(ghost_key_index) {
                    Failure::KeyDuplicate(message)
                } else {
                    Failure::Duplicate(message, on_key)
                }
            }
            2006 | 2013 | 1927 => Failure::Connection,
            1264 | 1265 | 1366 | 1406 | 1292 | 1048 | 1364 | 1411 | 1918 | 3140 | 4025 | 1690 => {
                Failure::Data(format!("{} (error {})", s.message, s.code))
            }
            _ => Failure::Fatal(format!("{} (error {})", s.message, s.code)),
        },
        mysql_async::Error::Io(_) => Failure::Connection,
        other => Failure::Fatal(other.to_string()),
    }
}

/// For a data error that says "... column 'c' at row N", finds that row of the selection and
/// shows its key and the offending value: "the row with id=42 has name='...'".
pub async fn describe_offending_row(
    conn: &mut Conn,
    t: &Tables,
    message: &str,
    orig_pred: &str,
    orig_params: Vec<Value>,
) -> Option<String> {
    let (_, rest) = message.split_once("column '")?;
    let (column, rest) = rest.split_once('\'')?;
    let row: u64 = rest
        .split("at row ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    // the error names the ghost's column; read the original column it comes from
    let source = t
        .targets
        .iter()
        .position(|c| c.eq_ignore_ascii_case(column))
        .map(|i| t.sources[i].clone())?;
    let sql = format!(
        "SELECT /* zdm-ost */ {}, {} FROM {} FORCE INDEX ({}) WHERE {orig_pred} ORDER BY {} LIMIT 1 OFFSET {}",
        read_list(&t.key_orig),
        quote_ident(&source),
        t.orig_q(),
        quote_ident(&t.key_index),
        ident_list(&names(&t.key_orig)),
        row.saturating_sub(1)
    );
    let found: Option<mysql_async::Row> = conn.exec_first(sql, orig_params).await.ok()?;
    let mut values = found?.unwrap();
    let value = values.pop()?;
    let key: Key = values.into_iter().map(KeyPart::from_query_value).collect();
    let shown = match value {
        Value::Bytes(b) => {
            let s = String::from_utf8_lossy(&b);
            if s.chars().count() > 80 {
                format!(
                    "'{}...' ({} characters)",
                    s.chars().take(80).collect::<String>(),
                    s.chars().count()
                )
            } else {
                format!("'{s}'")
            }
        }
        Value::NULL => "NULL".into(),
        v => v.as_sql(false),
    };
    Some(format!(
        "the row with {} has {source}={shown}",
        display_key(&names(&t.key_orig), &key)
    ))
}

/// A server error as the driver reports it (for tests of [`classify`]).
pub fn server_error(code: u16, message: &str) -> mysql_async::Error {
    mysql_async::Error::Server(mysql_async::ServerError {
        code,
        message: message.into(),
        state: "HY000".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_columns_follow_the_mapped_ones_with_their_literals() {
        let fills = vec![
            ("x".to_string(), "0".to_string()),
            ("e".to_string(), "1".to_string()),
        ];
        assert_eq!(
            insert_lists(&["id", "b"], &["id", "a"], &fills),
            (
                "`id`, `b`, `x`, `e`".to_string(),
                "`id`, `a`, 0, 1".to_string()
            )
        );
        assert_eq!(
            insert_lists(&["id"], &["id"], &[]),
            ("`id`".to_string(), "`id`".to_string())
        );
    }

    #[test]
    fn duplicates_on_the_ghost_key_are_told_apart_from_other_duplicates() {
        let e = server_error(1062, "Duplicate entry '5' for key 'PRIMARY'");
        assert_eq!(
            classify(&e, "PRIMARY"),
            Failure::KeyDuplicate("Duplicate entry '5' for key 'PRIMARY' (error 1062)".into())
        );
        let e = server_error(1062, "Duplicate entry '5' for key 't_zdm_gho.PRIMARY'");
        assert!(matches!(classify(&e, "PRIMARY"), Failure::KeyDuplicate(_)));
        let e = server_error(1062, "Duplicate entry 'a@x' for key 'email'");
        assert_eq!(
            classify(&e, "PRIMARY"),
            Failure::Duplicate(
                "Duplicate entry 'a@x' for key 'email' (error 1062)".into(),
                "email".into()
            )
        );
        assert_eq!(
            classify(&server_error(1205, "Lock wait timeout exceeded"), "PRIMARY"),
            Failure::Conflict
        );
        assert!(matches!(
            classify(
                &server_error(1406, "Data too long for column 'n' at row 3"),
                "PRIMARY"
            ),
            Failure::Data(_)
        ));
        assert!(matches!(
            classify(&server_error(1146, "Table doesn't exist"), "PRIMARY"),
            Failure::Fatal(_)
        ));
    }
}
