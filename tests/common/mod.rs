//! Test support: the real servers started by `scripts/mysql-env.sh`, one fresh database per
//! test, the zdm-ost binary run as a user would run it, and table snapshots for comparisons.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};

pub fn primary_port() -> u16 {
    std::env::var("ZDM_PRIMARY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3310)
}

pub fn replica_port() -> u16 {
    std::env::var("ZDM_REPLICA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3311)
}

pub fn opts(port: u16, user: &str, pass: Option<&str>, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(pass)
        .db_name(db)
        .prefer_socket(false)
        .setup(vec!["SET NAMES utf8mb4", "SET time_zone = '+00:00'"])
        .into()
}

pub async fn connect(port: u16) -> Conn {
    Conn::new(opts(port, "root", None, None))
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to 127.0.0.1:{port} ({e}); run scripts/mysql-env.sh start")
        })
}

/// A database of the test's own, dropped and created fresh, dropped again by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub conn: Conn,
}

impl TestDb {
    pub async fn new(test: &str) -> TestDb {
        let name = format!("zt_{test}");
        assert!(name.len() <= 40, "test database name too long: {name}");
        let mut conn = fresh_db(primary_port(), &name).await;
        conn.query_drop(format!("USE `{name}`")).await.unwrap();
        TestDb { name, conn }
    }

    pub async fn exec(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A fresh account `user`@127.0.0.1 (password `pw`) holding `grants` on this database
    /// only; the test drops it when done.
    pub async fn create_user(&mut self, user: &str, grants: &str) {
        self.exec(&format!("DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
            .await;
        self.exec(&format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'"
        ))
        .await;
        self.exec(&format!(
            "GRANT {grants} ON `{}`.* TO '{user}'@'127.0.0.1'",
            self.name
        ))
        .await;
    }

    /// The database's tables: for each, SHOW CREATE TABLE and every row in key order.
    pub async fn snapshot(&mut self) -> Vec<(String, String, Vec<Vec<Value>>)> {
        snapshot(&mut self.conn, &self.name).await
    }

    pub async fn tables(&mut self) -> Vec<String> {
        self.conn
            .query(format!("SHOW TABLES FROM `{}`", self.name))
            .await
            .unwrap()
    }

    pub async fn drop_db(mut self) {
        self.conn
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .unwrap();
        let _ = self.conn.disconnect().await;
    }
}

pub async fn snapshot(conn: &mut Conn, db: &str) -> Vec<(String, String, Vec<Vec<Value>>)> {
    let tables: Vec<String> = conn
        .query(format!("SHOW TABLES FROM `{db}`"))
        .await
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let create: Row = conn
            .query_first(format!("SHOW CREATE TABLE `{db}`.`{t}`"))
            .await
            .unwrap()
            .unwrap();
        let create: String = create.get(1).unwrap();
        let rows: Vec<Row> = conn
            .query(format!("SELECT * FROM `{db}`.`{t}` ORDER BY 1"))
            .await
            .unwrap();
        let rows = rows.into_iter().map(|r| r.unwrap()).collect();
        out.push((t, create, rows));
    }
    out
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs zdm-ost against the test primary with `--database db` and the given arguments.
pub async fn zdm(db: &str, args: &[&str]) -> Output {
    zdm_raw(
        &[
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &primary_port().to_string(),
                "--database",
                db,
            ],
            args,
        ]
        .concat(),
    )
    .await
}

/// [`zdm`] as `user`, an account made by [`TestDb::create_user`] (password `pw`).
pub async fn zdm_as(user: &str, db: &str, args: &[&str]) -> Output {
    zdm(db, &[&["--user", user, "--password", "pw"], args].concat()).await
}

/// The zdm-ost binary under test: this build's, or `ZDM_TEST_BIN` (to show that a new test
/// fails on an older build).
pub fn zdm_bin() -> PathBuf {
    std::env::var_os("ZDM_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_zdm-ost")))
}

pub async fn zdm_raw(args: &[&str]) -> Output {
    tokio::process::Command::new(zdm_bin())
        .args(args)
        .env_remove("ZDM_PASSWORD")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run zdm-ost")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts zdm-ost failed with exit code 1 and printed exactly this error line.
#[track_caller]
pub fn assert_error(o: &Output, expected: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected failure, got {:?}; stderr:\n{err}",
        o.status
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("zdm-ost: error: "))
        .unwrap_or_else(|| panic!("no error line in stderr:\n{err}"));
    assert_eq!(line, format!("zdm-ost: error: {expected}"));
}

/// Parses `--json` output.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// Starts (or reuses) an extra server through the test-bed script.
pub fn start_instance(name: &str, port: u16, extra: &[&str]) {
    let status = std::process::Command::new(repo_root().join("scripts/mysql-env.sh"))
        .arg("start-instance")
        .arg(name)
        .arg(port.to_string())
        .args(extra)
        .status()
        .expect("run scripts/mysql-env.sh");
    assert!(
        status.success(),
        "starting instance {name} on {port} failed"
    );
}

/// A throwaway server (see [`start_instance`]) with an empty database named like it, and a
/// connection to it.
pub async fn instance_db(name: &str, port: u16, extra: &[&str]) -> Conn {
    start_instance(name, port, extra);
    fresh_db(port, name).await
}

/// A connection to the server on `port`, with database `name` dropped and created empty.
async fn fresh_db(port: u16, name: &str) -> Conn {
    let mut conn = connect(port).await;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await
        .unwrap();
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .unwrap();
    conn
}

pub fn stop_instance(name: &str) {
    let _ = std::process::Command::new(repo_root().join("scripts/mysql-env.sh"))
        .arg("stop-instance")
        .arg(name)
        .status();
}
pub mod fixtures;
pub mod run;
pub mod writer;
