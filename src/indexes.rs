//! Secondary indexes built after the copy (`--defer-indexes`; the plan decides which, see
//! `plan::DeferIndexes`): dropped from the ghost while it is still empty, added back in one
//! online `ALTER` after the checksum.
//!
//! Only non-unique B-tree indexes are deferred: rows are identified by the primary key, and a
//! unique key must reject duplicates while the rows arrive, not after. The clauses are the
//! ghost's own `SHOW CREATE TABLE` lines (the server's spelling of what the ALTER defines), so
//! the rebuilt index is exactly the one the ALTER asked for. They are part of the checkpoint,
//! and the build adds only those the ghost lacks, so a run killed at any point resumes with
//! them built once.

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::apply::Follower;
use crate::conn::Endpoint;
use crate::error::Error;
use crate::sql::{qualified, quote_ident, server_code, server_message};
use crate::throttle::Throttle;

/// Changed keys collected, not applied, while the server builds the indexes; past this many the
/// applier flushes anyway (about 80 bytes a key).
const HELD_DURING_BUILD: usize = 50_000;

/// A secondary index of the ghost built after the copy: its name and its clause in the ghost's
/// definition (`KEY `k` (`k`)`), which `ALTER TABLE ... ADD` accepts as it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeferredIndex {
    pub name: String,
    pub clause: String,
}

/// The indexes' names, for messages: `a, b`.
pub fn index_names(list: &[&DeferredIndex]) -> String {
    list.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ghost's definition as `SHOW CREATE TABLE` gives it.
pub async fn ghost_definition(
    conn: &mut Conn,
    db: &str,
    ghost: &str,
) -> Result<String, mysql_async::Error> {
    let row: Option<(String, String)> = conn
        .query_first(format!(
            "SHOW /* zdm-ost */ CREATE TABLE {}",
            qualified(db, ghost)
        ))
        .await?;
    Ok(row.map(|(_, d)| d).unwrap_or_default())
}

/// The lines of a definition, each without its indentation and trailing comma.
pub fn definition_lines(def: &str) -> impl Iterator<Item = &str> {
    def.lines().map(|l| l.trim().trim_end_matches(','))
}

/// These indexes as a table definition declares them, in its order (an index whose line is not
/// a plain `KEY` clause is left out).
pub fn index_clauses(def: &str, names: &[String]) -> Vec<DeferredIndex> {
    definition_lines(def)
        .filter_map(|l| {
            names
                .iter()
                .find(|n| l.starts_with(&format!("KEY {} (", quote_ident(n))))
                .map(|n| DeferredIndex {
                    name: n.clone(),
                    clause: l.to_string(),
                })
        })
        .collect()
}

/// Drops the planned indexes from the (empty) ghost. Returns what was left out.
pub async fn leave_out(
    conn: &mut Conn,
    db: &str,
    ghost: &str,
    planned: &[String],
) -> Result<Vec<DeferredIndex>, Error> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let def = ghost_definition(conn, db, ghost)
        .await
        .map_err(Error::sql("reading the ghost's definition"))?;
    let deferred = index_clauses(&def, planned);
    if deferred.is_empty() {
        return Ok(deferred);
    }
    conn.query_drop(format!(
        "ALTER /* zdm-ost */ TABLE {} {}",
        qualified(db, ghost),
        deferred
            .iter()
            .map(|d| format!("DROP INDEX {}", quote_ident(&d.name)))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await
    .map_err(Error::sql(
        "leaving the secondary indexes out of the ghost table",
    ))?;
    tracing::info!(
        "secondary index(es) {} left out of the ghost until the copy is done",
        index_names(&deferred.iter().collect::<Vec<_>>())
    );
    Ok(deferred)
}

/// What building the deferred indexes needs.
pub struct Build<'a> {
    pub endpoint: &'a Endpoint,
    pub db: &'a str,
    pub ghost: &'a str,
    pub throttle: &'a Throttle,
    pub cancel: &'a CancellationToken,
}

impl Build<'_> {
    /// Adds the deferred indexes the ghost lacks in one online ALTER (`ALGORITHM=INPLACE,
    /// LOCK=NONE`), following the binlog on `follower` while it runs.
    ///
    /// The changed keys are collected meanwhile, not applied (up to [`HELD_DURING_BUILD`]): the
    /// server logs writes to the ghost made during the build and merges them in its last step,
    /// and with the applier writing through the build the application's commits stalled in that
    /// step (seen waiting in `COMMIT`, not on row locks; which server latch they wait on was not
    /// pinned down). Measured with the benchmark's unpaced load (1M rows, ~2,000 txn/s), four
    /// runs each: worst application stall 196-436 ms, in the build's last 0.4 s, when applying
    /// through the build; 71-126 ms, none in the build, when collecting. The catch-up before
    /// the cut-over applies what was collected (2-3 s of it under that load, 0.2 s at 500
    /// txn/s).
    ///
    /// `conn` reads the ghost's definition and can kill the build. Returns the milliseconds it
    /// took.
    pub async fn run(
        &self,
        conn: &mut Conn,
        follower: &mut Follower,
        deferred: &[DeferredIndex],
    ) -> Result<u64, Error> {
        let started = Instant::now();
        // (read the way they were left out: a resumed run may find some built already)
        let def = ghost_definition(conn, self.db, self.ghost)
            .await
            .map_err(Error::sql("reading the ghost's definition"))?;
        let all: Vec<String> = deferred.iter().map(|d| d.name.clone()).collect();
        let present = index_clauses(&def, &all);
        let missing: Vec<&DeferredIndex> = deferred
            .iter()
            .filter(|d| !present.iter().any(|p| p.name == d.name))
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let names = index_names(&missing);
        let sql = format!(
            "ALTER /* zdm-ost */ TABLE {} {}, ALGORITHM=INPLACE, LOCK=NONE",
            qualified(self.db, self.ghost),
            missing
                .iter()
                .map(|d| format!("ADD {}", d.clause))
                .collect::<Vec<_>>()
                .join(", ")
        );
        crate::failpoint::hit("build-indexes").await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // like a copy chunk, the build waits while the copy would be throttled
            if !self.throttle.wait_soft(self.cancel).await {
                return Err(Error::Cancelled);
            }
            tracing::info!("building secondary index(es) {names} on {}", self.ghost);
            let mut iconn = self.endpoint.connect().await?;
            let id = iconn.id();
            let sql = sql.clone();
            let mut task = tokio::spawn(async move {
                let r = iconn.query_drop(sql).await;
                let _ = iconn.disconnect().await;
                r
            });
            let followed: Result<(), Error> = loop {
                let until = tokio::time::Instant::now() + Duration::from_millis(100);
                let flush = follower.applier.backlog() >= HELD_DURING_BUILD;
                if let Err(e) = follower.follow(None, until, flush, self.cancel).await {
                    break Err(e.into());
                }
                if task.is_finished() {
                    break Ok(());
                }
            };
            if let Err(e) = followed {
                // the server would finish the build on its own: stop it
                let _ = conn.query_drop(format!("KILL QUERY {id}")).await;
                let _ = (&mut task).await;
                return Err(e);
            }
            let result = (&mut task).await.map_err(|e| Error::Sql {
                what: "the index build task",
                reason: e.to_string(),
            })?;
            match result {
                Ok(()) => break,
                // an earlier, interrupted run's build finished it meanwhile
                Err(e) if server_code(&e) == Some(1061) => break,
                // the ghost's metadata lock was not granted in time: try again
                Err(e) if server_code(&e) == Some(1205) && attempt < 5 => {
                    tracing::warn!(
                        "building index(es) {names}: {}; retrying",
                        server_message(&e)
                    );
                }
                Err(e) => return Err(Error::sql("building the deferred secondary indexes")(e)),
            }
        }
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!("secondary index(es) {names} built in {ms} ms");
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &str = "CREATE TABLE `t_zdm_gho` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` bigint(20) NOT NULL DEFAULT 0,\n  `c` char(10) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `c_u` (`c`),\n  KEY `k_1` (`k`),\n  KEY `kc` (`k`,`c`(4)) COMMENT 'x'\n) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4";

    #[test]
    fn index_clauses_are_the_definition_lines_of_the_named_indexes() {
        let clauses: Vec<String> = index_clauses(DEF, &["kc".into(), "k_1".into()])
            .into_iter()
            .map(|d| format!("{}: {}", d.name, d.clause))
            .collect();
        assert_eq!(
            clauses,
            vec![
                "k_1: KEY `k_1` (`k`)",
                "kc: KEY `kc` (`k`,`c`(4)) COMMENT 'x'"
            ]
        );
        assert!(index_clauses(DEF, &["c_u".into()]).is_empty());
    }
}
