//! Who may work on a table, and what runs leave behind: one run per table at a time (a named
//! lock held by the run's main connection); the checks that let `--resume` continue an
//! interrupted run (same ALTER, same ghost, binlog still there, tables not swapped already);
//! and dropping the helper tables of a failed or abandoned run.
//!
//! Invariant: nothing here ever drops the original table, and `<t>_zdm_old` only when it is
//! zdm-ost's own cut-over sentry (recognised by its comment): under that name there may also be
//! the old table an earlier migration kept.

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::checkpoint::{self, Checkpoint};
use crate::cutover::SENTRY_COMMENT;
use crate::ddl::TableNames;
use crate::error::Error;
use crate::progress::Phase;
use crate::sql::{qualified, server_code, server_message};

/// One run per table: a named lock on the main connection, held until it closes.
pub async fn acquire_run_lock(conn: &mut Conn, db: &str, table: &str) -> Result<(), Error> {
    let name = checkpoint::lock_name(db, table);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT /* zdm-ost */ GET_LOCK(?, 0)", (&name,))
        .await
        .map_err(Error::sql("taking the run lock"))?;
    if got.flatten() == Some(1) {
        return Ok(());
    }
    let holder: Option<Option<u64>> = conn
        .exec_first("SELECT /* zdm-ost */ IS_USED_LOCK(?)", (&name,))
        .await
        .unwrap_or(None);
    Err(Error::AlreadyRunning {
        table: qualified(db, table),
        holder: holder
            .flatten()
            .map(|h| h.to_string())
            .unwrap_or_else(|| "?".into()),
    })
}

/// The checkpoint of an interrupted run, checked against this run: same ALTER, same ghost,
/// binlog still there. Leftover probe and sentry tables are dropped.
pub async fn check_resumable(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    alter: &str,
) -> Result<Checkpoint, Error> {
    let q = Error::sql;
    let c = checkpoint::read(conn, db, &names.checkpoint)
        .await
        .map_err(|e| match server_code(&e) {
            // a column this version reads is missing
            Some(1054) => Error::Resume(format!(
                "the checkpoint {} was written by another version of zdm-ost (its format differs: {}). Resume with that version, or start over with --initially-drop-ghost-table",
                qualified(db, &names.checkpoint),
                server_message(&e).split(" (error").next().unwrap_or_default()
            )),
            _ => q("reading the checkpoint")(e),
        })?
        .ok_or_else(|| {
            Error::Resume(format!(
                "nothing to resume: there is no checkpoint {} of an interrupted migration. Run without --resume",
                qualified(db, &names.checkpoint)
            ))
        })?;
    if c.alter != alter {
        return Err(Error::Resume(format!(
            "the interrupted migration was started with --alter \"{}\". Resume it with that --alter, or start over with --initially-drop-ghost-table",
            c.alter
        )));
    }
    let hash = match checkpoint::ghost_hash(conn, db, &names.ghost, &c.deferred_indexes).await {
        Ok(h) => h,
        Err(_) => {
            // no ghost: either the swap already happened (killed during clean-up), or it is lost
            let old = crate::inspect::table_comment(conn, db, &names.old)
                .await
                .map_err(q("looking for the old table"))?;
            return Err(Error::Resume(match old {
                Some(comment) if comment != SENTRY_COMMENT && c.phase == Phase::CuttingOver.to_string() => format!(
                    "the interrupted migration had already swapped the tables: {} has the new schema and {} is the old table. Nothing is left to do but DROP TABLE {}, {}",
                    qualified(db, &names.original),
                    qualified(db, &names.old),
                    qualified(db, &names.changelog),
                    qualified(db, &names.checkpoint)
                ),
                _ => format!(
                    "the ghost table {} of the interrupted migration is gone. Start over with --initially-drop-ghost-table",
                    qualified(db, &names.ghost)
                ),
            }));
        }
    };
    if hash != c.ghost_hash {
        return Err(Error::Resume(format!(
            "the ghost table {} was changed since the checkpoint. Start over with --initially-drop-ghost-table",
            qualified(db, &names.ghost)
        )));
    }
    if !checkpoint::binlog_present(conn, &c.pos.file)
        .await
        .map_err(q("listing the binlogs"))?
    {
        return Err(Error::Resume(format!(
            "the binlog at the checkpoint's position {} is no longer on the server (purged), so the changes made since cannot be read. Start over with --initially-drop-ghost-table",
            c.pos
        )));
    }
    drop_table(conn, db, &names.probe)
        .await
        .map_err(q("dropping a leftover table"))?;
    drop_our_sentry(conn, db, names, false).await?;
    tracing::info!(
        "resuming the migration interrupted at {} (phase {}, checkpoint of {})",
        c.pos,
        c.phase,
        c.updated_at
    );
    Ok(c)
}

/// `DROP TABLE IF EXISTS`, tagged.
pub async fn drop_table(conn: &mut Conn, db: &str, table: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "DROP /* zdm-ost */ TABLE IF EXISTS {}",
        qualified(db, table)
    ))
    .await
}

/// Drops what a zdm-ost run leaves behind: ghost, changelog, checkpoint, probe, and the sentry
/// (only if it is zdm-ost's own, recognised by its comment: `<t>_zdm_old` may be a real old
/// table).
pub async fn drop_helpers(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    announce: bool,
) -> Result<(), Error> {
    for t in [
        &names.ghost,
        &names.changelog,
        &names.checkpoint,
        &names.probe,
    ] {
        drop_if_ours(conn, db, t, |_| true, "leftover", announce).await?;
    }
    drop_our_sentry(conn, db, names, announce).await
}

/// Drops `<t>_zdm_old` only if it is zdm-ost's cut-over sentry (recognised by its comment):
/// under that name there may also be the real old table of an earlier migration.
async fn drop_our_sentry(
    conn: &mut Conn,
    db: &str,
    names: &TableNames,
    announce: bool,
) -> Result<(), Error> {
    let ours = |comment: &str| comment == SENTRY_COMMENT;
    drop_if_ours(
        conn,
        db,
        &names.old,
        ours,
        "leftover cut-over sentry",
        announce,
    )
    .await
}

/// Drops `table` if it exists and `ours` accepts its comment.
async fn drop_if_ours(
    conn: &mut Conn,
    db: &str,
    table: &str,
    ours: impl Fn(&str) -> bool,
    what: &str,
    announce: bool,
) -> Result<(), Error> {
    let comment = crate::inspect::table_comment(conn, db, table)
        .await
        .map_err(Error::sql("looking for leftover tables"))?;
    if comment.as_deref().is_some_and(ours) {
        if announce {
            tracing::info!("dropping {what} {}", qualified(db, table));
        }
        drop_table(conn, db, table)
            .await
            .map_err(Error::sql("dropping a leftover table"))?;
    }
    Ok(())
}
