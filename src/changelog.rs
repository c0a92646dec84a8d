//! The changelog table `<t>_zdm_log`: rows zdm-ost writes on the primary and reads back from
//! its own binlog stream. A **sentinel** proves the stream has read everything written before
//! it: write a fresh token, wait until the stream delivers it.
//!
//! Rows are keyed by kind (1 = heartbeat, 2 = sentinel) and overwritten in place, so the table
//! never grows.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::sql::qualified;

pub async fn create(conn: &mut Conn, db: &str, name: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE /* zdm-ost */ TABLE {} (\
           id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
           kind VARCHAR(32) NOT NULL, \
           value VARCHAR(255) NOT NULL, \
           ts TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)\
         ) ENGINE=InnoDB COMMENT='zdm-ost changelog: heartbeats and cut-over sentinels'",
        qualified(db, name)
    ))
    .await
}

/// A token no earlier sentinel of this process used.
pub fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed),
        rand::random::<u32>()
    )
}

/// Writes a sentinel and returns its token.
pub async fn write_sentinel(
    conn: &mut Conn,
    db: &str,
    name: &str,
) -> Result<String, mysql_async::Error> {
    let token = new_token();
    conn.exec_drop(
        format!(
            "INSERT /* zdm-ost */ INTO {} (id, kind, value) VALUES (2, 'sentinel', ?) \
             ON DUPLICATE KEY UPDATE value = VALUES(value)",
            qualified(db, name)
        ),
        (token.as_str(),),
    )
    .await?;
    Ok(token)
}
