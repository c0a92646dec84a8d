//! Connections: how zdm-ost reaches a server, the session settings every connection gets, and
//! what server it is talking to (flavour and version).
//!
//! Session settings, set on every connection before it is used:
//! - the server's own `time_zone` (the global value, which a native ALTER's session has unless
//!   its client changes it), so DATETIME <-> TIMESTAMP conversions and CURRENT_TIMESTAMP
//!   defaults come out as the server's native ALTER computes them (docs/design.md, fidelity rule 3).
//!   TIMESTAMP key values are bound as epoch seconds ([`crate::key`]), so they do not depend
//!   on it;
//! - a strict `sql_mode` with the server's value-deciding modes ([`INHERITED_SQL_MODES`]),
//!   plus `NO_AUTO_VALUE_ON_ZERO` (so a row whose AUTO_INCREMENT column
//!   holds 0 is copied as 0, not given a fresh id): an ALTER the data cannot satisfy fails
//!   loudly instead of truncating or dropping rows;
//! - utf8mb4 names, and short lock waits, so zdm-ost never queues for long behind anyone.

use std::fmt;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use serde::Serialize;

use crate::sql::{server_code, server_message};

/// How long zdm-ost waits to connect before calling a server unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server lets a zdm-ost session sit idle (`wait_timeout`, its maximum): the main
/// connection holds the run lock and waits through a postponed cut-over, for hours or days. With
/// the server's default (8 h, often less) it was closed under it: the cut-over failed at
/// unpostpone, and the run lock was gone for a second run to take.
pub const IDLE_TIMEOUT_SECS: u64 = 31_536_000;
/// TCP keepalive on every connection, so a firewall or NAT between zdm-ost and the server does
/// not drop an idle one.
pub const KEEPALIVE_MS: u64 = 30_000;

/// The `sql_mode` every zdm-ost session has, whatever the server's.
pub const SQL_MODE: &str = "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

/// Modes taken from the server's global `sql_mode` when it has them: they decide which values
/// and definitions the server's own ALTER accepts and computes (a zero date under
/// NO_ZERO_DATE fails a native ALGORITHM=COPY ALTER with error 1292, an invalid DEFAULT fails
/// with 1067; `REAL` means FLOAT under REAL_AS_FLOAT; `||` concatenates under
/// PIPES_AS_CONCAT). Modes that change how zdm-ost's own statements parse or read
/// (ANSI_QUOTES, PAD_CHAR_TO_FULL_LENGTH, NO_BACKSLASH_ESCAPES, EMPTY_STRING_IS_NULL, the
/// ORACLE and other compatibility modes) are not taken.
pub const INHERITED_SQL_MODES: [&str; 9] = [
    "NO_ZERO_DATE",
    "NO_ZERO_IN_DATE",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "TIME_ROUND_FRACTIONAL",
    "NO_UNSIGNED_SUBTRACTION",
    "ALLOW_INVALID_DATES",
    "REAL_AS_FLOAT",
    "HIGH_NOT_PRECEDENCE",
    "PIPES_AS_CONCAT",
];

/// The SQL expression of a session's `sql_mode`: [`SQL_MODE`] plus the server's
/// [`INHERITED_SQL_MODES`].
pub fn session_sql_mode() -> String {
    let inherited: Vec<String> = INHERITED_SQL_MODES
        .iter()
        .map(|m| format!("IF(FIND_IN_SET('{m}', @@GLOBAL.sql_mode), '{m}', NULL)"))
        .collect();
    format!("CONCAT_WS(',', '{SQL_MODE}', {})", inherited.join(", "))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(
        "cannot connect to {addr}: {reason}. Check --host/--port and that the server is running and reachable from here"
    )]
    Unreachable { addr: String, reason: String },
    #[error(
        "access denied for user '{user}' at {addr}: {reason}. Check --user and --password (or ZDM_PASSWORD)"
    )]
    AccessDenied {
        addr: String,
        user: String,
        reason: String,
    },
    #[error("setting up a session on {addr} failed: {reason}")]
    Setup { addr: String, reason: String },
}

/// Where and as whom to connect. The password is never printed: `Debug` hides it.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    /// The same credentials on another host (used for replicas).
    pub fn with_addr(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    pub fn opts(&self, lock_wait_timeout_secs: u64) -> Opts {
        self.opts_with(lock_wait_timeout_secs, false)
    }

    fn opts_with(&self, lock_wait_timeout_secs: u64, read_committed: bool) -> Opts {
        let mut setup = vec![
            "SET NAMES utf8mb4".to_string(),
            format!(
                "SET SESSION time_zone = @@GLOBAL.time_zone, sql_mode = {}, \
                 lock_wait_timeout = {lock_wait_timeout_secs}, innodb_lock_wait_timeout = {lock_wait_timeout_secs}, \
                 wait_timeout = {IDLE_TIMEOUT_SECS}",
                session_sql_mode()
            ),
        ];
        if read_committed {
            setup.push("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string());
        }
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .prefer_socket(false)
            .stmt_cache_size(64)
            .tcp_keepalive(Some(Duration::from_millis(KEEPALIVE_MS)))
            .setup(setup)
            .into()
    }

    /// Opens one connection with zdm-ost's session settings.
    pub async fn connect(&self) -> Result<Conn, ConnError> {
        self.connect_with(self.opts(10)).await
    }

    /// Opens one connection whose transactions are READ COMMITTED: the copier's and the
    /// applier's sessions (each statement of theirs reads the latest committed rows).
    pub async fn connect_read_committed(&self) -> Result<Conn, ConnError> {
        self.connect_with(self.opts_with(10, true)).await
    }

    pub async fn connect_with(&self, opts: Opts) -> Result<Conn, ConnError> {
        let addr = self.to_string();
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Err(_) => Err(ConnError::Unreachable {
                addr,
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(match server_code(&e) {
                Some(1045) | Some(1044) | Some(1698) => ConnError::AccessDenied {
                    addr,
                    user: self.user.clone(),
                    reason: server_message(&e),
                },
                Some(_) => ConnError::Setup {
                    addr,
                    reason: server_message(&e),
                },
                None => ConnError::Unreachable {
                    addr,
                    reason: root_cause(&e),
                },
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flavor {
    MySql,
    MariaDb,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::MySql => "MySQL",
            Flavor::MariaDb => "MariaDB",
        })
    }
}

/// What server a connection talks to.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: (u32, u32, u32),
    pub version_string: String,
    pub server_id: u32,
    pub hostname: String,
}

impl ServerInfo {
    pub async fn read(conn: &mut Conn) -> Result<ServerInfo, mysql_async::Error> {
        let (version_string, comment, server_id, hostname): (String, String, u32, String) = conn
            .query_first(
                "SELECT /* zdm-ost */ VERSION(), @@version_comment, @@server_id, @@hostname",
            )
            .await?
            .unwrap_or_default();
        Ok(Self::parse(version_string, &comment, server_id, hostname))
    }

    fn parse(version_string: String, comment: &str, server_id: u32, hostname: String) -> Self {
        let flavor = if version_string.to_ascii_lowercase().contains("mariadb")
            || comment.to_ascii_lowercase().contains("mariadb")
        {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let version = parse_version(&version_string);
        ServerInfo {
            flavor,
            version,
            version_string,
            server_id,
            hostname,
        }
    }

    /// The shared-lock clause of a locking read that never waits.
    pub fn share_nowait(&self) -> &'static str {
        match self.flavor {
            Flavor::MariaDb => "LOCK IN SHARE MODE NOWAIT",
            Flavor::MySql => "FOR SHARE NOWAIT",
        }
    }

    /// `SHOW REPLICA STATUS` where the server knows it, `SHOW SLAVE STATUS` otherwise.
    pub fn replica_status_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 22) => "SHOW /* zdm-ost */ REPLICA STATUS",
            _ => "SHOW /* zdm-ost */ SLAVE STATUS",
        }
    }
}

/// The replica-status fields saying whether the replication threads run, under both names.
pub const IO_RUNNING: &[&str] = &["Slave_IO_Running", "Replica_IO_Running"];
pub const SQL_RUNNING: &[&str] = &["Slave_SQL_Running", "Replica_SQL_Running"];

/// A field of a replica-status row under whichever of its names the server uses
/// (`Slave_IO_Running` or `Replica_IO_Running`, `Master_Host` or `Source_Host`, ...), as text.
pub fn replica_field(row: &mysql_async::Row, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| match row.get_opt::<mysql_async::Value, _>(*n)?.ok()? {
            mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            mysql_async::Value::Int(i) => Some(i.to_string()),
            mysql_async::Value::UInt(i) => Some(i.to_string()),
            _ => None,
        })
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.flavor, self.version_string)
    }
}

/// The innermost cause's text: "Connection refused (os error 111)" rather than the wrappers'.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// "10.11.19-MariaDB-0+deb12u1-log" -> (10, 11, 19); "8.0.36" -> (8, 0, 36).
fn parse_version(s: &str) -> (u32, u32, u32) {
    let s = s.strip_prefix("5.5.5-").unwrap_or(s);
    let mut parts = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_both_flavours_parse() {
        assert_eq!(
            parse_version("10.11.19-MariaDB-0+deb12u1-log"),
            (10, 11, 19)
        );
        assert_eq!(parse_version("5.5.5-10.6.12-MariaDB"), (10, 6, 12));
        assert_eq!(parse_version("8.0.36"), (8, 0, 36));
        let i = ServerInfo::parse(
            "8.0.36".into(),
            "MySQL Community Server - GPL",
            1,
            "h".into(),
        );
        assert_eq!(i.flavor, Flavor::MySql);
        assert_eq!(i.share_nowait(), "FOR SHARE NOWAIT");
        assert_eq!(i.replica_status_sql(), "SHOW /* zdm-ost */ REPLICA STATUS");
        let m = ServerInfo::parse("10.11.19-MariaDB-log".into(), "Debian", 1, "h".into());
        assert_eq!(m.flavor, Flavor::MariaDb);
        assert_eq!(m.share_nowait(), "LOCK IN SHARE MODE NOWAIT");
        assert_eq!(m.replica_status_sql(), "SHOW /* zdm-ost */ SLAVE STATUS");
    }

    #[test]
    fn endpoint_debug_hides_the_password() {
        let e = Endpoint {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: Some("s3cret".into()),
        };
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
