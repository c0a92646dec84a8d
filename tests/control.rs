//! Throttling, operator control and observability, against the real primary and replica:
//! replica lag (by heartbeat) pauses the copy, flag files, load limits, every control-socket
//! command over a real socket, postponed cut-over, hooks, and the metrics endpoint over HTTP.

mod common;

use std::path::PathBuf;

use std::time::Duration;

use common::fixtures::*;
use common::run::Running;
use common::writer::{Gen, Shape, Writers};
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const ALTER: &str = "ADD COLUMN note TEXT NULL";

/// The writer without column c.
fn shape(seeded: u64) -> Shape {
    std_shape(
        vec![
            ("a", Gen::Int, false),
            ("b", Gen::Str, true),
            ("d", Gen::Decimal, false),
        ],
        seeded,
    )
}

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zdm-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn zdm(db: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut all = vec!["--table", "t", "--alter", ALTER, "--execute"];
    all.extend_from_slice(args);
    Running::spawn(primary_port(), db, &all, env)
}

/// zdm-ost with its control socket served and the cut-over postponed by a flag file, once it
/// waits for the cut-over: the run, the socket and the flag file.
async fn postponed(db: &str, test: &str, args: &[&str]) -> (Running, PathBuf, PathBuf) {
    let dir = scratch(test);
    let sock = dir.join("ctl.sock");
    let flag = dir.join("postpone");
    std::fs::write(&flag, "").unwrap();
    let mut all = vec![
        "--serve-socket-file",
        sock.to_str().unwrap(),
        "--postpone-cut-over-flag-file",
        flag.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let run = zdm(db, &all, &[]);
    run.wait_for("cut-over postponed", Duration::from_secs(60))
        .await;
    (run, sock, flag)
}

/// One command over the control socket; its one-line answer.
async fn ask(socket: &std::path::Path, cmd: &str) -> String {
    let s = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    talk(s, cmd).await
}

async fn talk<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S, cmd: &str) -> String {
    let (r, mut w) = tokio::io::split(s);
    w.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.unwrap();
    line.trim_end().to_string()
}

async fn status(socket: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&ask(socket, "status-json").await).unwrap()
}

async fn wait_status(
    socket: &std::path::Path,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..600 {
        if socket.exists() {
            let s = status(socket).await;
            if ok(&s) {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("status never showed {what}: {}", status(socket).await);
}

async fn columns(conn: &mut Conn) -> Vec<String> {
    conn.query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION")
        .await
        .unwrap()
}

/// Restarts the replica's SQL thread even if the test fails halfway.
struct RestartSqlThread;

impl Drop for RestartSqlThread {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{}", replica_port()),
                "-uroot",
                "-e",
                "START SLAVE SQL_THREAD",
            ])
            .status();
    }
}

#[tokio::test]
async fn stopped_replica_sql_thread_pauses_the_copy_and_start_slave_resumes_it() {
    let mut db = TestDb::new("c_lag").await;
    std_table(&mut db, 30_000).await;
    let dir = scratch("lag");
    let sock = dir.join("ctl.sock");
    let replica = format!("127.0.0.1:{}", replica_port());
    let run = zdm(
        &db.name,
        &[
            "--replica",
            &replica,
            "--max-lag-millis",
            "1000",
            "--chunk-size",
            "200",
            "--chunk-time",
            "0.05",
            "--serve-socket-file",
            sock.to_str().unwrap(),
        ],
        // the first chunk is followed by a 3 s pause, within which the replica stops and the
        // monitor (which looks at replication once a second) throttles: the copy cannot have
        // run to its end, or the cut-over begun, before the throttle is there
        &[("ZDM_FAILPOINT", "copy~20,copy=3000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    let mut rconn = connect(replica_port()).await;
    let _guard = RestartSqlThread;
    rconn.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    let s = wait_status(&sock, "a replication throttle", |s| {
        s["throttled"]
            .as_str()
            .is_some_and(|r| r.contains("replication is not running"))
    })
    .await;
    assert!(
        s["throttled"].as_str().unwrap().contains(&format!(
            "replica {replica}: replication is not running (IO thread Yes, SQL thread No)"
        )),
        "{s}"
    );
    // progress stops moving while throttled
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = status(&sock).await["copied_rows"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = status(&sock).await["copied_rows"].as_u64().unwrap();
    assert_eq!(
        before, after,
        "the copy went on while the replica was stopped"
    );
    assert!(after < 30_000, "copied {after}");
    rconn.query_drop("START SLAVE SQL_THREAD").await.unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no longer throttled by: replica"), "{err}");
    assert_eq!(
        columns(&mut db.conn).await,
        ["id", "a", "b", "c", "d", "note"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn throttle_flag_file_pauses_and_removing_it_resumes() {
    let mut db = TestDb::new("c_flag").await;
    std_table(&mut db, 3000).await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape(3000),
        1,
        Duration::from_millis(2),
        false,
    )
    .await;
    let dir = scratch("flag");
    let flag = dir.join("throttle");
    std::fs::write(&flag, "").unwrap();
    let sock = dir.join("ctl.sock");
    let run = zdm(
        &db.name,
        &[
            "--throttle-flag-file",
            flag.to_str().unwrap(),
            "--serve-socket-file",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    let s = wait_status(&sock, "the flag-file throttle", |s| {
        s["throttled"]
            .as_str()
            .is_some_and(|r| r.contains("throttle flag file"))
    })
    .await;
    assert_eq!(
        s["throttled"],
        format!("the throttle flag file {} exists", flag.display())
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = status(&sock).await;
    assert_eq!(s["copied_rows"], 0, "copied while paused: {s}");
    assert_eq!(s["phase"], "copying");
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    // the panic flag file: the migration aborts cleanly as soon as it appears
    db.exec("DROP TABLE t_zdm_old").await;
    let panic_flag = dir.join("panic");
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note2 INT NULL",
            "--execute",
            "--panic-flag-file",
            panic_flag.to_str().unwrap(),
        ],
        &[("ZDM_FAILPOINT", "copy=60000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    std::fs::write(&panic_flag, "").unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        error_line(&err),
        format!("zdm-ost: error: aborted: the panic flag file {} exists. Nothing was renamed; the original table is untouched", panic_flag.display())
    );
    assert_eq!(
        columns(&mut db.conn).await,
        ["id", "a", "b", "c", "d", "note"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn max_load_pauses_and_critical_load_aborts_with_the_original_intact() {
    let mut db = TestDb::new("c_load").await;
    std_table(&mut db, 2000).await;
    let dir = scratch("load");
    let sock = dir.join("ctl.sock");
    // Threads_running is at least 1 (the monitor's own query): a limit of 0 always trips
    let run = zdm(
        &db.name,
        &[
            "--max-load",
            "Threads_running=0",
            "--serve-socket-file",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    let s = wait_status(&sock, "max-load", |s| {
        s["throttled"]
            .as_str()
            .is_some_and(|r| r.starts_with("max-load: Threads_running="))
    })
    .await;
    assert!(s["throttled"].as_str().unwrap().ends_with(" > 0"), "{s}");
    assert_eq!(
        ask(&sock, "max-load=Threads_running=1000").await,
        "ok: max-load Threads_running=1000"
    );
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");

    db.exec("DROP TABLE t_zdm_old").await;
    let before: Vec<Row> = db.conn.query("SELECT * FROM t ORDER BY id").await.unwrap();
    let before: Vec<_> = before.into_iter().map(|r| r.unwrap()).collect();
    let (code, _, err) = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note2 INT NULL",
            "--execute",
            "--critical-load",
            "Threads_running=0",
            "--critical-load-interval-millis",
            "200",
        ],
        &[("ZDM_FAILPOINT", "copy~200")],
    )
    .finish()
    .await;
    assert_eq!(code, Some(1), "{err}");
    let line = error_line(&err);
    assert!(
        line.starts_with("zdm-ost: error: aborted: critical load: Threads_running=")
            && line.ends_with(" > 0 (--critical-load Threads_running=0). Nothing was renamed; the original table is untouched"),
        "{line}"
    );
    assert!(
        err.contains("critical load (Threads_running="),
        "no confirming re-check logged:\n{err}"
    );
    let after: Vec<Row> = db.conn.query("SELECT * FROM t ORDER BY id").await.unwrap();
    assert_eq!(
        after.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
        before
    );
    let left: Vec<String> = db.conn.query("SHOW TABLES LIKE 't\\_zdm%'").await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    db.drop_db().await;
}

#[tokio::test]
async fn every_control_command_is_answered_over_a_real_socket() {
    let mut db = TestDb::new("c_socket").await;
    std_table(&mut db, 2000).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (run, sock, _flag) =
        postponed(&db.name, "socket", &["--serve-tcp-port", &port.to_string()]).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert!(ask(&sock, "help")
        .await
        .starts_with("commands: help, status, status-json, throttle"));
    let line = ask(&sock, "status").await;
    assert!(
        line.contains(", cut-over POSTPONED (remove the postpone flag file, or send unpostpone)"),
        "{line}"
    );
    let s = status(&sock).await;
    assert_eq!(s["copied_rows"], 2000);
    assert_eq!(s["postponed"], true);
    assert_eq!(ask(&sock, "throttle").await, "ok: throttled");
    assert_eq!(
        status(&sock).await["throttled"],
        "operator: throttle command"
    );
    assert_eq!(
        ask(&sock, "no-throttle").await,
        "ok: operator throttle released"
    );
    assert_eq!(status(&sock).await["throttled"], serde_json::Value::Null);
    assert!(ask(&sock, "chunk-size=?").await.parse::<u64>().is_ok());
    assert_eq!(
        ask(&sock, "chunk-size=500").await,
        "ok: next chunk 500 rows"
    );
    assert_eq!(
        ask(&sock, "chunk-size=5").await,
        "error: chunk-size takes a whole number from 10 to 100000"
    );
    assert_eq!(
        ask(&sock, "chunk-size=lots").await,
        "error: chunk-size takes a whole number from 10 to 100000"
    );
    assert_eq!(
        ask(&sock, "max-lag-millis=2500").await,
        "ok: max-lag-millis 2500"
    );
    assert_eq!(
        ask(&sock, "max-lag-millis=-1").await,
        "error: max-lag-millis takes a positive whole number"
    );
    assert_eq!(
        ask(&sock, "max-load=Threads_running=50").await,
        "ok: max-load Threads_running=50"
    );
    assert_eq!(
        ask(&sock, "max-load=Threads_running").await,
        "error: `Threads_running` is not VARIABLE=NUMBER (e.g. Threads_running=25)"
    );
    assert_eq!(
        ask(&sock, "critical-load=Threads_running=500").await,
        "ok: critical-load Threads_running=500"
    );
    assert_eq!(
        ask(&sock, "critical-load=x=y").await,
        "error: `y` in `x=y` is not a whole number"
    );
    assert_eq!(
        ask(&sock, "launch-missiles").await,
        "error: unknown command `launch-missiles`; try help"
    );
    assert_eq!(ask(&sock, "").await, "error: empty command; try help");
    // the same over TCP
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert!(talk(tcp, "help").await.starts_with("commands: "));
    // ... which serves nothing that changes the run
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert_eq!(
        talk(tcp, "panic").await,
        "error: over TCP zdm-ost serves only help, status, status-json; send `panic` on the control socket (owner-only)"
    );
    // a line without end is cut off, not buffered
    let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let _ = c.write_all(&vec![b'x'; 10_000]).await;
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "error: command longer than 4096 bytes\n");
    // several commands on one connection
    let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
    c.write_all(b"chunk-size=?\nbogus\n").await.unwrap();
    let mut buf = vec![0u8; 256];
    let mut got = String::new();
    while got.lines().count() < 2 {
        let n = c.read(&mut buf).await.unwrap();
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert_eq!(
        got.lines().nth(1),
        Some("error: unknown command `bogus`; try help")
    );
    assert_eq!(ask(&sock, "panic").await, "ok: aborting");
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(error_line(&err), "zdm-ost: error: aborted: operator: panic command. Nothing was renamed; the original table is untouched");
    assert_eq!(columns(&mut db.conn).await, ["id", "a", "b", "c", "d"]);
    assert!(!sock.exists(), "the socket file was left behind");
    db.drop_db().await;
}

#[tokio::test]
async fn postponed_cut_over_waits_in_sync_until_unpostpone() {
    let mut db = TestDb::new("c_postpone").await;
    std_table(&mut db, 3000).await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape(3000),
        1,
        Duration::from_millis(2),
        false,
    )
    .await;
    let (run, sock, flag) = postponed(&db.name, "postpone", &[]).await;
    let applied = status(&sock).await["applied_changes"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // still the old table, and the ghost keeps up with the writer
    assert_eq!(columns(&mut db.conn).await, ["id", "a", "b", "c", "d"]);
    assert!(
        status(&sock).await["applied_changes"].as_u64().unwrap() > applied,
        "nothing applied while postponed"
    );
    assert_eq!(
        ask(&sock, "unpostpone").await,
        "ok: cut-over no longer postponed"
    );
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(flag.exists(), "unpostpone does not need the file gone");
    writers.stop_without_errors().await;
    assert_eq!(
        columns(&mut db.conn).await,
        ["id", "a", "b", "c", "d", "note"]
    );
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

/// `a` of row `id` in the ghost once it equals the original's, polling up to 10 s; `None` if it
/// never does.
async fn ghost_catches_up(conn: &mut Conn, id: u64) -> Option<i64> {
    for _ in 0..200 {
        let (orig, ghost): (Option<i64>, Option<i64>) = conn
            .exec_first(
                "SELECT (SELECT a FROM t WHERE id = ?), (SELECT a FROM t_zdm_gho WHERE id = ?)",
                (id, id),
            )
            .await
            .unwrap()
            .unwrap();
        if orig == ghost {
            return ghost;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// An application transaction keeping a changed row locked holds back that row's change only:
/// the flush gives the locked key back for later and goes on, so the other keys of its batch,
/// and changes made afterwards, reach the ghost while the lock is held; the held-back change
/// lands once the lock is gone. (A flush used to retry the locked key until it was free,
/// applying nothing else meanwhile.)
#[tokio::test]
async fn a_row_kept_locked_holds_back_only_its_own_change() {
    let mut db = TestDb::new("c_locked_row").await;
    std_table(&mut db, 1000).await;
    let (run, sock, _flag) = postponed(&db.name, "locked-row", &[]).await;
    // applying paused: both changes wait in one batch
    assert_eq!(ask(&sock, "throttle").await, "ok: throttled");
    let change = "SET a = a + 1000 WHERE id IN";
    db.exec(&format!("UPDATE t {change} (10, 20)")).await;
    db.exec(&format!("UPDATE ctl {change} (10, 20, 30)")).await;
    wait_status(&sock, "the two changed keys waiting", |s| {
        s["backlog"].as_u64() >= Some(2)
    })
    .await;
    let mut app = connect(primary_port()).await;
    app.query_drop(format!("USE `{}`", db.name)).await.unwrap();
    app.query_drop("BEGIN").await.unwrap();
    let locked: Option<i64> = app
        .query_first("SELECT a FROM t WHERE id = 20 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(
        ask(&sock, "no-throttle").await,
        "ok: operator throttle released"
    );
    assert_eq!(
        ghost_catches_up(&mut db.conn, 10).await,
        Some(1010),
        "the unlocked key of the batch was not applied:\n{}",
        run.stderr()
    );
    db.exec(&format!("UPDATE t {change} (30)")).await;
    assert_eq!(
        ghost_catches_up(&mut db.conn, 30).await,
        Some(1030),
        "a change made after the locked row was not applied:\n{}",
        run.stderr()
    );
    let ghost_20: Option<i64> = db
        .conn
        .query_first("SELECT a FROM t_zdm_gho WHERE id = 20")
        .await
        .unwrap();
    assert_eq!(ghost_20, Some(20), "the locked row cannot have been read");
    app.query_drop("COMMIT").await.unwrap();
    assert_eq!(locked, Some(1020));
    assert_eq!(ghost_catches_up(&mut db.conn, 20).await, Some(1020));
    assert_eq!(
        ask(&sock, "unpostpone").await,
        "ok: cut-over no longer postponed"
    );
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

/// Status lines and the `on-status` hook keep coming after the copy, through the checksum and the
/// deferred index build, each saying how far that phase is (a checksum of a big table used to
/// print nothing for minutes).
#[tokio::test]
async fn status_lines_and_on_status_continue_through_checksum_and_index_build() {
    let mut db = TestDb::new("c_status").await;
    std_table(&mut db, 2000).await;
    let dir = scratch("status");
    let phases = dir.join("phases");
    hook(
        &dir,
        "on-status",
        &format!("echo $ZDM_PHASE >> {}", phases.display()),
    );
    let (code, _, err) = zdm(
        &db.name,
        &[
            "--hooks-path",
            dir.to_str().unwrap(),
            "--status-interval",
            "0.05",
            "--defer-indexes",
            "always",
        ],
        &[("ZDM_FAILPOINT", "checksum=500,build-indexes=500")],
    )
    .finish()
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(" INFO verifying: checksummed ")
                && l.contains(" chunks, applied ")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.contains(" INFO indexing: ")
            && l.contains("s in this phase, copied 2000 rows, applied ")),
        "{err}"
    );
    let seen = std::fs::read_to_string(&phases).unwrap_or_default();
    for phase in ["verifying", "indexing"] {
        assert!(
            seen.lines().any(|l| l == phase),
            "no on-status in {phase}: {seen}"
        );
    }
    assert_eq!(
        columns(&mut db.conn).await,
        ["id", "a", "b", "c", "d", "note"]
    );
    db.drop_db().await;
}

fn hook(dir: &std::path::Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn hooks_run_with_their_environment_and_a_failing_before_cut_over_aborts() {
    let mut db = TestDb::new("c_hooks").await;
    std_table(&mut db, 2000).await;
    let dir = scratch("hooks");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for name in [
        "on-startup",
        "on-validated",
        "on-row-copy-complete",
        "on-before-cut-over",
        "on-success",
        "on-failure",
        "on-status",
    ] {
        hook(
            &dir,
            name,
            // written whole or not at all: an on-status hook still running when zdm-ost
            // exits is killed halfway
            &format!(
                "env | grep '^ZDM_' | sort > {o}/{name}.$$ && mv {o}/{name}.$$ {o}/{name}.env",
                o = out.display()
            ),
        );
    }
    let (code, _, err) = zdm(
        &db.name,
        &[
            "--hooks-path",
            dir.to_str().unwrap(),
            "--status-interval",
            "0.05",
            "--user",
            "zdm",
        ],
        // the password as the README recommends passing it: it must not reach the hooks
        &[("ZDM_FAILPOINT", "copy=300"), ("ZDM_PASSWORD", "zdm")],
    )
    .finish()
    .await;
    assert_eq!(code, Some(0), "{err}");
    let env = |name: &str| {
        std::fs::read_to_string(out.join(format!("{name}.env")))
            .unwrap_or_else(|_| panic!("hook {name} did not run"))
    };
    for name in [
        "on-startup",
        "on-validated",
        "on-row-copy-complete",
        "on-before-cut-over",
        "on-success",
        "on-status",
    ] {
        let e = env(name);
        assert!(
            e.contains(&format!("ZDM_DATABASE={}\n", db.name)),
            "{name}: {e}"
        );
        assert!(
            e.contains("ZDM_TABLE=t\n") && e.contains(&format!("ZDM_ALTER={ALTER}\n")),
            "{name}: {e}"
        );
        assert!(e.contains(&format!("ZDM_HOOK={name}\n")), "{name}: {e}");
        assert!(!e.contains("ZDM_PASSWORD"), "{name} got the password: {e}");
        assert!(
            e.contains("ZDM_ELAPSED_SECONDS=") && e.contains("ZDM_ESTIMATED_ROWS="),
            "{name}: {e}"
        );
    }
    assert!(env("on-before-cut-over").contains("ZDM_COPIED_ROWS=2000\n"));
    assert!(env("on-success").contains("ZDM_PHASE=done\n"));
    assert!(!out.join("on-failure.env").exists());

    // a failing on-before-cut-over aborts before any lock; on-failure hears why
    db.exec("DROP TABLE t_zdm_old").await;
    hook(
        &dir,
        "on-before-cut-over",
        "echo 'change freeze in effect' >&2; exit 3",
    );
    let (code, _, err) = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note2 INT NULL",
            "--execute",
            "--hooks-path",
            dir.to_str().unwrap(),
        ],
        &[],
    )
    .finish()
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        error_line(&err),
        format!(
            "zdm-ost: error: hook {}/on-before-cut-over failed (exit status: 3): change freeze in effect; aborting before the cut-over. Nothing was renamed; the original table is untouched",
            dir.display()
        )
    );
    assert!(
        env("on-failure").contains("ZDM_ERROR=hook "),
        "{}",
        env("on-failure")
    );
    assert_eq!(
        columns(&mut db.conn).await,
        ["id", "a", "b", "c", "d", "note"]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn metrics_are_scraped_over_http_while_migrating() {
    let mut db = TestDb::new("c_metrics").await;
    std_table(&mut db, 2000).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics_addr = format!("127.0.0.1:{port}");
    let replica = format!("127.0.0.1:{}", replica_port());
    let (run, sock, flag) = postponed(
        &db.name,
        "metrics",
        &["--metrics-addr", &metrics_addr, "--replica", &replica],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(
        body.contains("# TYPE zdm_rows_copied counter\nzdm_rows_copied 2000\n"),
        "{body}"
    );
    assert!(body.contains("zdm_rows_estimated "), "{body}");
    assert!(body.contains("zdm_changes_applied "), "{body}");
    assert!(body.contains("zdm_backlog "), "{body}");
    assert!(body.contains("zdm_throttled 0\n"), "{body}");
    assert!(
        body.contains(&format!(
            "zdm_replica_lag_seconds{{replica=\"{replica}\"}} "
        )),
        "{body}"
    );
    assert!(body.contains("zdm_phase{phase=\""), "{body}");
    assert!(body.contains("zdm_cut_over_attempts 0\n"), "{body}");
    // throttled, with its reason
    assert_eq!(ask(&sock, "throttle").await, "ok: throttled");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(
        body.contains("zdm_throttled 1\n")
            && body.contains("zdm_throttle_reason{reason=\"operator: throttle command\"} 1"),
        "{body}"
    );
    assert_eq!(
        ask(&sock, "no-throttle").await,
        "ok: operator throttle released"
    );
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    db.drop_db().await;
}

#[tokio::test]
async fn slow_commits_on_the_primary_trip_the_write_latency_breaker() {
    let mut db = TestDb::new("c_latency").await;
    std_table(&mut db, 20_000).await;
    let dir = scratch("latency");
    let sock = dir.join("ctl.sock");
    let run = zdm(
        &db.name,
        &[
            "--max-write-latency-millis",
            "20",
            "--heartbeat-interval-millis",
            "10",
            "--chunk-size",
            "100",
            "--chunk-time",
            "0.05",
            "--serve-socket-file",
            sock.to_str().unwrap(),
        ],
        &[("ZDM_FAILPOINT", "copy~30")],
    );
    run.wait_for("phase: expanded -> copying", Duration::from_secs(60))
        .await;
    // make every heartbeat commit wait ~40 ms behind a lock on its row
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let name = db.name.clone();
    let locker = tokio::spawn(async move {
        let mut c = connect(primary_port()).await;
        c.query_drop(format!("USE `{name}`")).await.unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            c.query_drop("START TRANSACTION").await.unwrap();
            let _: Vec<Row> = c
                .query("SELECT * FROM t_zdm_log WHERE id = 1 FOR UPDATE")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
            c.query_drop("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let s = wait_status(&sock, "the latency breaker", |s| {
        s["throttled"]
            .as_str()
            .is_some_and(|r| r.starts_with("write latency p95 "))
    })
    .await;
    assert!(
        s["throttled"]
            .as_str()
            .unwrap()
            .ends_with(" ms > --max-write-latency-millis 20"),
        "{s}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    locker.await.unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("no longer throttled by: write latency p95"),
        "{err}"
    );
    db.drop_db().await;
}

/// The redo log buffer is global, so this runs on a server of its own with the smallest one
/// (2 MiB): copying a 40 MB table fills it, and the run says how often writes waited for it,
/// with the setting that avoids it.
#[tokio::test]
async fn a_full_redo_log_buffer_during_the_run_is_reported() {
    let port = 3317;
    let mut c = instance_db("zt_logwaits", port, &["--innodb-log-buffer-size=2097152"]).await;
    c.query_drop(
        "CREATE TABLE zt_logwaits.t (id INT NOT NULL PRIMARY KEY, b VARCHAR(3000) NOT NULL)",
    )
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO zt_logwaits.t SELECT seq, REPEAT('x', 2000) FROM zt_logwaits.seq_1_to_20000",
    )
    .await
    .unwrap();
    let o = zdm_raw(&[
        "--port",
        &port.to_string(),
        "--database",
        "zt_logwaits",
        "--table",
        "t",
        "--alter",
        ALTER,
        "--no-attempt-instant-ddl",
        "--execute",
        "--json",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let waits = json(&o)["summary"]["log_waits"].as_u64().unwrap();
    assert!(waits > 0, "{}", stdout(&o));
    let err = stderr(&o);
    let expected = format!("WARN InnoDB's redo log buffer was full {waits} time(s) during the migration (Innodb_log_waits): writes on the server, the application's too, waited for it to be written out. A larger innodb_log_buffer_size (now 2 MiB) avoids that");
    assert!(err.lines().any(|l| l.ends_with(&expected)), "{err}");
    c.query_drop("DROP DATABASE zt_logwaits").await.unwrap();
    let _ = c.disconnect().await;
    stop_instance("zt_logwaits");
}
