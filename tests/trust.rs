//! Trust: the checksum before cut-over (repairs, or aborts before any rename), checkpoint and
//! resume after SIGKILL at random moments under a running writer, a purged binlog, and one run
//! per table. Real servers; control-table equality at the end.

mod common;

use std::time::Duration;

use common::fixtures::*;
use common::run::Running;
use common::writer::Writers;
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use rand::Rng;

const ALTER: &str = "ADD COLUMN note TEXT NULL";

/// zdm-ost migrating `t` with [`ALTER`], `--execute`, plus `args`.
fn zdm(port: u16, db: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut all = vec!["--table", "t", "--alter", ALTER, "--execute"];
    all.extend_from_slice(args);
    Running::spawn(port, db, &all, env)
}

#[tokio::test]
async fn checksum_finds_and_repairs_a_row_changed_behind_the_tools_back() {
    let mut db = TestDb::new("v_repair").await;
    std_table(&mut db, 12_000).await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &std_shape(std_cols(), 12_000),
        1,
        Duration::from_millis(2),
        true, // insert-only: nothing re-syncs the tampered rows by chance
    )
    .await;
    let run = zdm(
        primary_port(),
        &db.name,
        &["--json"],
        &[("ZDM_FAILPOINT", "checksum=1500")],
    );
    run.wait_for("failpoint checksum reached", Duration::from_secs(60))
        .await;
    // the copy is done and verified next: corrupt the ghost directly
    db.exec("UPDATE t_zdm_gho SET b = 'tampered' WHERE id = 7000")
        .await;
    db.exec("DELETE FROM t_zdm_gho WHERE id = 11999").await;
    let (code, out, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let checksum = &v["summary"]["checksum"];
    assert!(
        checksum["repaired_chunks"].as_u64().unwrap() >= 1,
        "{checksum}"
    );
    assert!(checksum["chunks"].as_u64().unwrap() >= 3, "{checksum}");
    assert!(err.contains("chunk(s) differ"), "{err}");
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

#[tokio::test]
async fn checksum_difference_that_persists_aborts_before_the_rename() {
    let mut db = TestDb::new("v_persist").await;
    std_table(&mut db, 3000).await;
    let before = rows(&mut db.conn, "SELECT * FROM t ORDER BY id").await;
    let run = zdm(
        primary_port(),
        &db.name,
        &[],
        &[("ZDM_FAILPOINT", "copy=2000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    // a lossy "conversion": whatever is written to the ghost loses its value of b
    db.exec(
        "CREATE TRIGGER lossy BEFORE INSERT ON t_zdm_gho FOR EACH ROW SET NEW.b = LEFT(NEW.b, 2)",
    )
    .await;
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(1), "{err}");
    let line = error_line(&err);
    assert!(
        line.starts_with(&format!(
            "zdm-ost: error: checksum: the ghost table still differs from `{}`.`t` after 3 repairs, in rows from the start .. to the end.",
            db.name
        )) && line.ends_with("The ALTER changes these values (a lossy conversion?), or something else writes to the ghost. Nothing was renamed; the original table is untouched"),
        "{line}"
    );
    assert_eq!(
        rows(&mut db.conn, "SELECT * FROM t ORDER BY id").await,
        before
    );
    let left: Vec<String> = db.conn.query("SHOW TABLES LIKE 't\\_zdm%'").await.unwrap();
    assert!(left.is_empty(), "helper tables left: {left:?}");
    db.drop_db().await;
}

/// SIGKILL at random moments during the copy and during the catch-up, each time `--resume`,
/// with a writer running throughout; the end result equals the control table.
#[tokio::test]
async fn resume_after_sigkill_at_random_moments_loses_nothing() {
    let (mut db, writers) =
        std_table_with_writers("v_resume", 100_000, 2, Duration::from_millis(2)).await;
    // slow the copy down (a pause in every chunk) so that every kill lands inside it
    let slow = [("ZDM_FAILPOINT", "copy~50")];
    let copy_args = [
        "--chunk-size",
        "50",
        "--chunk-time",
        "0.06",
        "--threads",
        "3",
        "--resume",
    ];
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut progress_seen = Vec::new();
    // the first run starts fresh; every later one resumes
    let first = zdm(
        primary_port(),
        &db.name,
        &["--chunk-size", "50", "--chunk-time", "0.06"],
        &slow,
    );
    first
        .wait_for("phase: expanded -> copying", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(rng.gen_range(600..1200))).await;
    first.kill().await;
    kills += 1;
    for _ in 0..4 {
        let run = zdm(primary_port(), &db.name, &copy_args, &slow);
        run.wait_for("resuming: ", Duration::from_secs(60)).await;
        run.wait_for("phase: expanded -> copying", Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(600..1200))).await;
        let line = run
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("resuming: "))
            .cloned()
            .unwrap();
        progress_seen.push(line);
        run.kill().await;
        kills += 1;
    }
    // once more, during the catch-up before the cut-over lock
    let run = zdm(
        primary_port(),
        &db.name,
        &["--resume"],
        &[("ZDM_FAILPOINT", "cut-over-start")],
    );
    run.wait_for("failpoint cut-over-start reached", Duration::from_secs(120))
        .await;
    run.kill().await;
    kills += 1;
    assert!(kills >= 5);
    // the copy made progress across the kills (resumed after a watermark, not from scratch)
    assert!(
        progress_seen.iter().any(|l| l.contains("copied up to id=")),
        "{progress_seen:?}"
    );
    let (code, out, err) = zdm(primary_port(), &db.name, &["--resume", "--json"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    let left: Vec<String> = db
        .conn
        .query("SHOW TABLES LIKE 't\\_zdm\\_%'")
        .await
        .unwrap();
    assert_eq!(left, vec!["t_zdm_old".to_string()]);
    db.drop_db().await;
}

/// The table's index names, sorted.
async fn indexes(db: &mut TestDb, table: &str) -> Vec<String> {
    let mut names: Vec<String> = db
        .conn
        .exec(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .unwrap();
    names.sort();
    names
}

/// Killed with the secondary indexes not built yet, then killed again once they were built:
/// each `--resume` accepts the ghost as it finds it (the deferred indexes do not count as a
/// change to it), builds what is missing, and the end result equals the control table with the
/// index in place.
#[tokio::test]
async fn resume_after_sigkill_around_the_deferred_index_build() {
    let (mut db, writers) =
        std_table_with_writers("v_defer", 5000, 2, Duration::from_millis(2)).await;
    let args = ["--defer-indexes", "always", "--chunk-size", "500"];
    let run = zdm(
        primary_port(),
        &db.name,
        &args,
        &[("ZDM_FAILPOINT", "build-indexes")],
    );
    run.wait_for("failpoint build-indexes reached", Duration::from_secs(60))
        .await;
    run.kill().await;
    assert_eq!(
        indexes(&mut db, "t_zdm_gho").await,
        vec!["PRIMARY".to_string()]
    );
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let run = zdm(
        primary_port(),
        &db.name,
        &resumed,
        &[("ZDM_FAILPOINT", "cut-over-start")],
    );
    run.wait_for("failpoint cut-over-start reached", Duration::from_secs(60))
        .await;
    assert!(
        run.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("secondary index(es) ka built in ")),
        "the resumed run did not build the index"
    );
    run.kill().await;
    assert_eq!(
        indexes(&mut db, "t_zdm_gho").await,
        vec!["PRIMARY".to_string(), "ka".to_string()]
    );
    let (code, _, err) = zdm(primary_port(), &db.name, &resumed, &[]).finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("resuming the migration interrupted at"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    assert_eq!(
        indexes(&mut db, "t").await,
        vec!["PRIMARY".to_string(), "ka".to_string()]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_second_run_on_the_same_table_is_refused() {
    let mut db = TestDb::new("v_second").await;
    std_table(&mut db, 1000).await;
    let first = zdm(primary_port(), &db.name, &[], &[("ZDM_FAILPOINT", "copy")]);
    first
        .wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    for extra in [
        &[][..],
        &["--initially-drop-ghost-table"][..],
        &["--resume"][..],
    ] {
        let (code, _, err) = zdm(primary_port(), &db.name, extra, &[]).finish().await;
        assert_eq!(code, Some(1), "{err}");
        let line = error_line(&err);
        assert!(
            line.starts_with(&format!(
                "zdm-ost: error: another zdm-ost run is migrating `{}`.`t` (connection ",
                db.name
            )) && line.ends_with(" holds its lock); wait for it to finish, or stop it first"),
            "{line}"
        );
    }
    // the first run's ghost survived the attempts
    let ghost: Vec<String> = db
        .conn
        .query("SHOW TABLES LIKE 't\\_zdm\\_gho'")
        .await
        .unwrap();
    assert_eq!(ghost.len(), 1);
    first.kill().await;
    db.drop_db().await;
}

/// Purging binlogs is global, so this runs on a server of its own.
#[tokio::test]
async fn resume_after_the_binlog_was_purged_says_to_start_over() {
    let port = 3315;
    let mut conn = instance_db("zt_purge", port, &[]).await;
    conn.query_drop(format!("CREATE TABLE zt_purge.t {STD_TABLE}"))
        .await
        .unwrap();
    conn.query_drop("INSERT INTO zt_purge.t (id, a, b, c, d) SELECT seq, seq, 'b', NULL, 1 FROM zt_purge.seq_1_to_2000").await.unwrap();
    let run = zdm(port, "zt_purge", &[], &[("ZDM_FAILPOINT", "copy")]);
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    run.kill().await;
    // the killed reader's dump thread must be gone, or PURGE keeps the file it reads (the
    // server may notice the closed connection only at its next write: end it here)
    for _ in 0..100 {
        let ids: Vec<u64> = conn
            .query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .await
            .unwrap();
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let _ = conn.query_drop(format!("KILL {id}")).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let current: Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let file: String = current.get(0).unwrap();
    // the server keeps a binlog until InnoDB has made its commits durable (its binlog
    // checkpoint, written in the background after a rotation): purge until it is gone
    let mut logs = 0;
    for _ in 0..200 {
        conn.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .unwrap();
        let all: Vec<Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
        logs = all.len();
        if logs == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logs, 1, "the old binlogs could not be purged");
    let (code, _, err) = zdm(port, "zt_purge", &["--resume"], &[]).finish().await;
    assert_eq!(code, Some(1), "{err}");
    let line = error_line(&err);
    assert!(
        line.starts_with("zdm-ost: error: --resume: the binlog at the checkpoint's position mariadb-bin.")
            && line.ends_with("is no longer on the server (purged), so the changes made since cannot be read. Start over with --initially-drop-ghost-table"),
        "{line}"
    );
    let (code, _, err) = zdm(port, "zt_purge", &["--initially-drop-ghost-table"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(0), "{err}");
    conn.query_drop("DROP DATABASE zt_purge").await.unwrap();
    let _ = conn.disconnect().await;
    stop_instance("zt_purge");
}

#[tokio::test]
async fn resume_after_the_swap_already_happened_says_the_migration_is_done() {
    let mut db = TestDb::new("v_swapped").await;
    std_table(&mut db, 500).await;
    let (code, _, err) = zdm(primary_port(), &db.name, &[], &[]).finish().await;
    assert_eq!(code, Some(0), "{err}");
    // as if killed after the RENAME, before dropping the changelog and checkpoint
    db.exec("CREATE TABLE t_zdm_log (id INT PRIMARY KEY)").await;
    let old_format = "CREATE TABLE t_zdm_ckp (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, alter_text TEXT NOT NULL, ghost_hash VARCHAR(16) NOT NULL, \
         watermark TEXT NULL, binlog_file VARCHAR(255) NOT NULL, binlog_pos BIGINT UNSIGNED NOT NULL, binlog_gtid VARCHAR(255) NULL, \
         phase VARCHAR(32) NOT NULL, copied_rows BIGINT UNSIGNED NOT NULL DEFAULT 0, tool_version VARCHAR(32) NOT NULL, \
         created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))";
    db.exec(
        "CREATE TABLE t_zdm_ckp (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, alter_text TEXT NOT NULL, ghost_hash VARCHAR(16) NOT NULL, \
         deferred_indexes TEXT NOT NULL, watermark TEXT NULL, binlog_file VARCHAR(255) NOT NULL, binlog_pos BIGINT UNSIGNED NOT NULL, binlog_gtid VARCHAR(255) NULL, \
         phase VARCHAR(32) NOT NULL, copied_rows BIGINT UNSIGNED NOT NULL DEFAULT 0, tool_version VARCHAR(32) NOT NULL, \
         created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
    )
    .await;
    db.exec(&format!(
        "INSERT INTO t_zdm_ckp (id, alter_text, ghost_hash, deferred_indexes, binlog_file, binlog_pos, phase, tool_version) VALUES (1, '{ALTER}', 'x', '[]', 'f', 4, 'cutting-over', '0')"
    ))
    .await;
    let (code, _, err) = zdm(primary_port(), &db.name, &["--resume"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(1), "{err}");
    let n = db.name.clone();
    assert_eq!(
        error_line(&err),
        format!("zdm-ost: error: --resume: the interrupted migration had already swapped the tables: `{n}`.`t` has the new schema and `{n}`.`t_zdm_old` is the old table. Nothing is left to do but DROP TABLE `{n}`.`t_zdm_log`, `{n}`.`t_zdm_ckp`")
    );
    // a checkpoint of an earlier version's format is not misread
    db.exec("DROP TABLE t_zdm_ckp").await;
    db.exec(old_format).await;
    db.exec(&format!(
        "INSERT INTO t_zdm_ckp (id, alter_text, ghost_hash, binlog_file, binlog_pos, phase, tool_version) VALUES (1, '{ALTER}', 'x', 'f', 4, 'copying', '0.0.9')"
    ))
    .await;
    let (code, _, err) = zdm(primary_port(), &db.name, &["--resume"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        error_line(&err),
        format!("zdm-ost: error: --resume: the checkpoint `{n}`.`t_zdm_ckp` was written by another version of zdm-ost (its format differs: Unknown column 'deferred_indexes' in 'SELECT'). Resume with that version, or start over with --initially-drop-ghost-table")
    );
    db.drop_db().await;
}

/// The checkpoint's binlog position, `file:pos`, zero-padded so that later sorts after.
async fn checkpoint_pos(db: &mut TestDb) -> String {
    let (file, pos): (String, u64) = db
        .conn
        .query_first("SELECT binlog_file, binlog_pos FROM t_zdm_ckp WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    format!("{file}:{pos:020}")
}

/// While the cut-over waits (postponed here; the checksum and the index build alike) the
/// checkpoint follows the applier, so a run killed hours into a postponed cut-over resumes from a
/// recent binlog position, not from where its copy ended, which the server may have purged by
/// then. (It used to stay where the copy ended.)
#[tokio::test]
async fn a_postponed_run_keeps_its_checkpoint_current_and_resumes_from_it() {
    let (mut db, writers) =
        std_table_with_writers("v_ckp_follow", 3000, 1, Duration::from_millis(2)).await;
    let flag = std::env::temp_dir().join(format!("zdm-test-ckp-follow-{}", std::process::id()));
    std::fs::write(&flag, "").unwrap();
    let run = zdm(
        primary_port(),
        &db.name,
        &["--postpone-cut-over-flag-file", flag.to_str().unwrap()],
        &[],
    );
    run.wait_for("cut-over postponed", Duration::from_secs(60))
        .await;
    let at_copy_end = checkpoint_pos(&mut db).await;
    // a later binlog file: the writer's changes from here on are in it
    db.exec("FLUSH BINARY LOGS").await;
    let status: Row = db
        .conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let rotated = format!("{}:{:020}", status.get::<String, _>(0).unwrap(), 0);
    let mut followed = at_copy_end.clone();
    for _ in 0..100 {
        followed = checkpoint_pos(&mut db).await;
        if followed > rotated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        followed > rotated,
        "the checkpoint stayed at {followed} (at the end of the copy: {at_copy_end}) while the binlog moved on to {rotated}"
    );
    run.kill().await;
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = zdm(primary_port(), &db.name, &["--resume"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(0), "{err}");
    let resumed_at = err
        .lines()
        .find_map(|l| l.split("resuming the migration interrupted at ").nth(1))
        .unwrap_or_else(|| panic!("{err}"))
        .to_string();
    let (file, rest) = resumed_at.split_once(':').unwrap();
    let pos: u64 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        format!("{file}:{pos:020}") >= followed,
        "resumed at {resumed_at}, before the checkpoint {followed}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

/// A postponed cut-over outlasts the server's `wait_timeout` (2 s here, on a server of its
/// own): the run keeps its connections and its lock, a second run cannot drop its ghost, and
/// the cut-over goes through at the end.
#[tokio::test]
async fn a_postponement_longer_than_wait_timeout_keeps_the_run_and_its_lock() {
    let port = 3320;
    let mut conn = instance_db("zt_idle", port, &["--wait-timeout=2"]).await;
    conn.query_drop(
        "USE zt_idle; CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT); \
         CREATE TABLE ctl LIKE t; INSERT INTO t SELECT seq, seq FROM seq_1_to_1000; INSERT INTO ctl SELECT * FROM t",
    )
    .await
    .unwrap();
    let (run, flag) = common::run::postponed(
        port,
        "zt_idle",
        "idle",
        &["--table", "t", "--alter", ALTER, "--execute"],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (code, _, err) = zdm(port, "zt_idle", &["--initially-drop-ghost-table"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        error_line(&err).contains("another zdm-ost run is migrating `zt_idle`.`t`"),
        "{err}"
    );
    // a fresh session: the test's own went idle past wait_timeout too
    let mut c = Conn::new(common::opts(port, "root", None, Some("zt_idle")))
        .await
        .unwrap();
    for t in ["t", "ctl"] {
        c.query_drop(format!("UPDATE {t} SET a = -a WHERE id % 10 = 0"))
            .await
            .unwrap();
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_rows(
        &mut c,
        "SELECT id, a FROM t ORDER BY id",
        "SELECT id, a FROM ctl ORDER BY id",
    )
    .await;
}

/// The connection holding the run lock is killed during a postponed cut-over: the run stops
/// without dropping anything (the lock may be another run's by then), and `--resume` finishes it.
#[tokio::test]
async fn losing_the_connection_that_holds_the_run_lock_keeps_the_run_resumable() {
    let mut db = TestDb::new("v_lostlock").await;
    std_table(&mut db, 2000).await;
    let (run, flag) = common::run::postponed(
        primary_port(),
        &db.name,
        "lostlock",
        &["--table", "t", "--alter", ALTER, "--execute"],
    )
    .await;
    let holder: Option<u64> = db
        .conn
        .exec_first(
            "SELECT IS_USED_LOCK(?)",
            (format!("zdm-ost:{}.t", db.name),),
        )
        .await
        .unwrap()
        .flatten();
    db.exec(&format!("KILL {}", holder.expect("the run lock is held")))
        .await;
    for t in ["t", "ctl"] {
        db.exec(&format!("UPDATE {t} SET a = a + 5 WHERE id % 9 = 0"))
            .await;
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("(the connection holding the run lock was lost). The ghost table and checkpoint are kept"),
        "{err}"
    );
    assert!(db.tables().await.contains(&"t_zdm_gho".to_string()));
    let (code, _, err) = zdm(primary_port(), &db.name, &["--resume"], &[])
        .finish()
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}
