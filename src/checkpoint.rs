//! The checkpoint table `<t>_zdm_ckp`: what `--resume` needs to continue a migration that was
//! killed. One row, rewritten every [`EVERY`] and at every phase change.
//!
//! Why resuming from it loses nothing: `binlog_*` is a position before which every change has
//! been flushed into the ghost (the follower's safe position), and `watermark` a key up to which
//! every copy chunk was done. A row at or below the watermark was copied at some moment after
//! the original stream started; every later change to it is either flushed already (its event
//! lies before the checkpoint position) or will be read again by the stream restarted at that
//! position. Rows above the watermark are copied again, by a copier that starts after the new
//! stream. Re-applying a change is harmless: applying is idempotent.

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::binlog::BinlogPos;
use crate::indexes::{definition_lines, ghost_definition, DeferredIndex};
use crate::key::Key;
use crate::sql::qualified;

/// How often the checkpoint is written while copying.
pub const EVERY: Duration = Duration::from_millis(500);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, serde::Serialize)]
pub struct Checkpoint {
    pub alter: String,
    pub ghost_hash: String,
    /// The ghost's secondary indexes left out for the copy, to be added after it.
    pub deferred_indexes: Vec<DeferredIndex>,
    pub watermark: Option<Key>,
    pub pos: BinlogPos,
    pub phase: String,
    pub copied_rows: u64,
    pub tool_version: String,
    pub updated_at: String,
}

pub async fn create(conn: &mut Conn, db: &str, name: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE /* zdm-ost */ TABLE {} (\
           id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
           alter_text TEXT NOT NULL, \
           ghost_hash VARCHAR(16) NOT NULL, \
           deferred_indexes TEXT NOT NULL, \
           watermark TEXT NULL, \
           binlog_file VARCHAR(255) NOT NULL, \
           binlog_pos BIGINT UNSIGNED NOT NULL, \
           binlog_gtid VARCHAR(255) NULL, \
           phase VARCHAR(32) NOT NULL, \
           copied_rows BIGINT UNSIGNED NOT NULL DEFAULT 0, \
           tool_version VARCHAR(32) NOT NULL, \
           created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
           updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)\
         ) ENGINE=InnoDB COMMENT='zdm-ost checkpoint: resume with --resume'",
        qualified(db, name)
    ))
    .await
}

pub async fn write(
    conn: &mut Conn,
    db: &str,
    name: &str,
    c: &Checkpoint,
) -> Result<(), mysql_async::Error> {
    let watermark = c
        .watermark
        .as_ref()
        .map(|k| serde_json::to_string(k).unwrap_or_default());
    conn.exec_drop(
        format!(
            "INSERT /* zdm-ost */ INTO {} (id, alter_text, ghost_hash, deferred_indexes, watermark, binlog_file, binlog_pos, binlog_gtid, phase, copied_rows, tool_version) \
             VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE alter_text = VALUES(alter_text), ghost_hash = VALUES(ghost_hash), \
             deferred_indexes = VALUES(deferred_indexes), \
             watermark = VALUES(watermark), binlog_file = VALUES(binlog_file), binlog_pos = VALUES(binlog_pos), binlog_gtid = VALUES(binlog_gtid), \
             phase = VALUES(phase), copied_rows = VALUES(copied_rows), tool_version = VALUES(tool_version)",
            qualified(db, name)
        ),
        (
            &c.alter,
            &c.ghost_hash,
            serde_json::to_string(&c.deferred_indexes).unwrap_or_default(),
            watermark,
            &c.pos.file,
            c.pos.pos,
            &c.pos.gtid,
            &c.phase,
            c.copied_rows,
            &c.tool_version,
        ),
    )
    .await
}

/// Keeps the checkpoint's position current once the copy is done, written from inside the
/// [`crate::apply::Follower`] as it applies: the checksum and above all a postponed cut-over can
/// last hours, and a run killed then must resume from a recent position, not from the one where
/// the copy ended, which the server may have purged by then. Each write is the copy's last
/// checkpoint with the follower's safe position, on a connection of its own.
pub struct Periodic {
    conn: Conn,
    db: String,
    table: String,
    last: Checkpoint,
    /// The copy's watermark, recorded unless the follower holds keys back below it.
    copied: Option<Key>,
    next: std::time::Instant,
}

impl Periodic {
    pub fn new(conn: Conn, db: &str, table: &str, last: Checkpoint) -> Periodic {
        Periodic {
            conn,
            db: db.to_string(),
            table: table.to_string(),
            copied: last.watermark.clone(),
            last,
            next: std::time::Instant::now() + EVERY,
        }
    }

    /// The phase the next writes record.
    pub fn set_phase(&mut self, phase: &str) {
        self.last.phase = phase.to_string();
    }

    /// Writes the checkpoint at `pos` when [`EVERY`] has passed since the last write and the
    /// position moved. `watermark`: the follower's, when it held keys back at `pos`.
    pub async fn tick(&mut self, pos: &BinlogPos, watermark: Option<&Option<Key>>) {
        if std::time::Instant::now() >= self.next && self.last.pos != *pos {
            self.write(pos, watermark).await;
        }
    }

    /// Writes the checkpoint at `pos`. A failed write is logged: the next one may succeed.
    async fn write(&mut self, pos: &BinlogPos, watermark: Option<&Option<Key>>) {
        self.next = std::time::Instant::now() + EVERY;
        self.last.pos = pos.clone();
        self.last.watermark = watermark.cloned().unwrap_or_else(|| self.copied.clone());
        if let Err(e) = write(&mut self.conn, &self.db, &self.table, &self.last).await {
            tracing::warn!(
                "could not write the checkpoint: {}",
                crate::sql::server_message(&e)
            );
        }
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// The checkpoint, if the table exists and holds one.
pub async fn read(
    conn: &mut Conn,
    db: &str,
    name: &str,
) -> Result<Option<Checkpoint>, mysql_async::Error> {
    let exists = crate::inspect::table_comment(conn, db, name).await?;
    if exists.is_none() {
        return Ok(None);
    }
    type Row = (
        String,
        String,
        String,
        Option<String>,
        String,
        u64,
        Option<String>,
        String,
        u64,
        String,
        String,
    );
    let row: Option<Row> = conn
        .query_first(format!(
            "SELECT /* zdm-ost */ alter_text, ghost_hash, deferred_indexes, watermark, binlog_file, binlog_pos, binlog_gtid, phase, copied_rows, tool_version, \
             CAST(updated_at AS CHAR) FROM {} WHERE id = 1",
            qualified(db, name)
        ))
        .await?;
    Ok(row.map(
        |(
            alter,
            ghost_hash,
            deferred,
            watermark,
            file,
            pos,
            gtid,
            phase,
            copied_rows,
            tool_version,
            updated_at,
        )| Checkpoint {
            alter,
            ghost_hash,
            deferred_indexes: serde_json::from_str(&deferred).unwrap_or_default(),
            watermark: watermark.and_then(|w| serde_json::from_str(&w).ok()),
            pos: BinlogPos { file, pos, gtid },
            phase,
            copied_rows,
            tool_version,
            updated_at,
        },
    ))
}

/// A short hash of the ghost table's definition: its AUTO_INCREMENT counter and the deferred
/// index clauses left out (so it is the same before and after they are built).
pub async fn ghost_hash(
    conn: &mut Conn,
    db: &str,
    ghost: &str,
    deferred: &[DeferredIndex],
) -> Result<String, mysql_async::Error> {
    let def = ghost_definition(conn, db, ghost).await?;
    let normalized: String = definition_lines(&def)
        .filter(|l| !deferred.iter().any(|d| d.clause == *l))
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(format!("{:08x}", crc32fast::hash(normalized.as_bytes())))
}

/// Is this binlog file still on the server?
pub async fn binlog_present(conn: &mut Conn, file: &str) -> Result<bool, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW /* zdm-ost */ BINARY LOGS").await?;
    Ok(rows
        .iter()
        .any(|r| r.get::<String, _>(0).as_deref() == Some(file)))
}

/// One run per table at a time: a named lock, held by the run's main connection.
pub fn lock_name(db: &str, table: &str) -> String {
    let name = format!("zdm-ost:{db}.{table}");
    if name.len() <= 64 {
        name
    } else {
        format!("zdm-ost:{:08x}", crc32fast::hash(name.as_bytes()))
    }
}
