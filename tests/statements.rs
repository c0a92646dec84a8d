//! The statement stream: statements that change neither the table's rows nor its definition
//! never stop a run; statements that change the table (or may: statement-format DML in its
//! database, LOAD DATA) stop it, however they are written.
//!
//! Each test postpones the cut-over, so the statements arrive while zdm-ost follows the binlog
//! after the checksum, and the run's outcome depends on them alone.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::fixtures::*;
use common::run::Running;
use common::*;

/// Statement-format writes stop every run that may be reached (a stored function may write
/// anywhere): these tests take turns, so one's statements never reach another's run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zdm-stmt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// zdm-ost on `t` with the cut-over postponed, once it waits; the run and its flag file.
async fn postponed(db: &str, name: &str) -> (Running, PathBuf) {
    common::run::postponed(
        primary_port(),
        db,
        name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
        ],
    )
    .await
}

#[tokio::test]
async fn statements_that_change_neither_rows_nor_definition_do_not_stop_the_run() {
    let _turn = SERIAL.lock().await;
    let mut db = TestDb::new("s_harmless").await;
    std_table(&mut db, 300).await;
    db.exec("DROP USER IF EXISTS 'zt_s_reader'@'127.0.0.1'")
        .await;
    db.exec("CREATE USER 'zt_s_reader'@'127.0.0.1'").await;
    let (run, flag) = postponed(&db.name, "harmless").await;
    let name = db.name.clone();
    for sql in [
        "ANALYZE TABLE t".to_string(),
        "OPTIMIZE TABLE t".into(),
        "CHECK TABLE t".into(),
        "CHECKSUM TABLE t".into(),
        "CREATE EVENT t ON SCHEDULE EVERY 1 HOUR DISABLE DO DELETE FROM t".into(),
        "ALTER EVENT t DISABLE".into(),
        "DROP EVENT t".into(),
        format!("GRANT SELECT ON `{name}`.t TO 'zt_s_reader'@'127.0.0.1'"),
        format!("REVOKE SELECT ON `{name}`.t FROM 'zt_s_reader'@'127.0.0.1'"),
        "CREATE VIEW v AS SELECT id, a FROM t".into(),
        "CREATE TABLE t_backup LIKE t".into(),
        "CREATE TABLE t_copy AS SELECT * FROM t WHERE id < 10".into(),
        "/*!40000 ALTER TABLE t_backup DISABLE KEYS */".into(),
        // an XA transaction on another table, and a column merely called like the table
        "CREATE TABLE other_xa (id INT PRIMARY KEY)".into(),
        "XA START 'zx1'".into(),
        "INSERT INTO other_xa VALUES (1)".into(),
        "XA END 'zx1'".into(),
        "XA PREPARE 'zx1'".into(),
        "XA COMMIT 'zx1'".into(),
        "ALTER TABLE other_xa ADD COLUMN t INT".into(),
        "DROP TABLE t_backup, t_copy, other_xa".into(),
    ] {
        db.exec(&sql).await;
    }
    // and real changes, through the binlog path
    for t in ["t", "ctl"] {
        db.exec(&format!("UPDATE {t} SET a = a + 1 WHERE id % 7 = 0"))
            .await;
        db.exec(&format!("DELETE FROM {t} WHERE id % 11 = 0")).await;
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_control(&mut db.conn).await;
    db.exec("DROP USER 'zt_s_reader'@'127.0.0.1'").await;
    db.drop_db().await;
}

/// Runs `statements` (in one session) while the run is postponed; returns its error line,
/// after checking that it exited 1 and left no helper table.
async fn stopped_by(db: &mut TestDb, name: &str, statements: &[&str]) -> String {
    let (run, flag) = postponed(&db.name, name).await;
    for sql in statements {
        db.exec(sql).await;
    }
    // (the cut-over stays postponed: a run that does not stop would wait forever)
    run.wait_for("migration failed", Duration::from_secs(30))
        .await;
    let (code, _, err) = run.finish().await;
    let _ = std::fs::remove_file(&flag);
    assert_eq!(code, Some(1), "{err}");
    let tables = db.tables().await;
    assert!(
        !tables.iter().any(|t| t.contains("_zdm_")),
        "helpers left: {tables:?}"
    );
    error_line(&err)
}

#[tokio::test]
async fn a_truncate_however_written_stops_the_run() {
    let _turn = SERIAL.lock().await;
    let mut db = TestDb::new("s_truncate").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT)")
        .await;
    db.exec("INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
        .await;
    let target = format!("`{}`.`t`", db.name);
    for (name, statements, query) in [
        (
            "comment",
            vec!["/*!40000 TRUNCATE TABLE t */"],
            "/*!40000 TRUNCATE TABLE t */",
        ),
        (
            "mcomment",
            vec!["/*M!100000 TRUNCATE TABLE `t` */"],
            "/*M!100000 TRUNCATE TABLE `t` */",
        ),
        (
            "setstatement",
            vec!["SET STATEMENT max_statement_time = 0 FOR TRUNCATE TABLE t"],
            "SET STATEMENT max_statement_time = 0 FOR TRUNCATE TABLE t",
        ),
        (
            "ansi",
            vec![
                "SET SESSION sql_mode = 'ANSI_QUOTES'",
                "TRUNCATE TABLE \"t\"",
                "SET SESSION sql_mode = DEFAULT",
            ],
            "TRUNCATE TABLE \"t\"",
        ),
    ] {
        db.exec("INSERT IGNORE INTO t SELECT seq, seq FROM seq_1_to_100")
            .await;
        let line = stopped_by(&mut db, name, &statements).await;
        assert!(
            line.ends_with(&format!(
                "{target} was changed by another statement while migrating ({query}): it truncates the table. \
                 The ghost table no longer matches it; run the migration again once that change is done"
            )),
            "{name}: {line}"
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn statement_format_dml_and_load_data_in_the_database_stop_the_run() {
    let _turn = SERIAL.lock().await;
    let mut db = TestDb::new("s_stmtdml").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT)")
        .await;
    db.exec("INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
        .await;
    db.exec("CREATE VIEW v AS SELECT id, a FROM t").await;
    let target = format!("`{}`.`t`", db.name);
    let tail = "some session writes with binlog_format other than ROW, and zdm-ost cannot tell which rows it changed. \
                Make every session use binlog_format=ROW and run the migration again";
    // an UPDATE through a view never names the table
    let line = stopped_by(
        &mut db,
        "view",
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "UPDATE v SET a = a + 1 WHERE id < 5",
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    assert!(
        line.ends_with(&format!(
            "a statement-based change that may reach {target} (UPDATE v SET a = a + 1 WHERE id < 5): {tail}"
        )),
        "{line}"
    );
    // a stored function writes: the binlog holds only `SELECT f(...)`
    db.exec(
        "CREATE FUNCTION bump(i INT) RETURNS INT DETERMINISTIC MODIFIES SQL DATA BEGIN UPDATE t SET a = a + 1000 WHERE id = i; RETURN 1; END",
    )
    .await;
    let line = stopped_by(
        &mut db,
        "function",
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "SELECT bump(7)",
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    assert!(
        line.contains("`bump`(7)): a stored function wrote in STATEMENT format"),
        "{line}"
    );
    // statement-format DML in another database, whose trigger writes the table
    db.exec("CREATE DATABASE IF NOT EXISTS zt_s_other").await;
    db.exec("CREATE TABLE IF NOT EXISTS zt_s_other.log (n INT)")
        .await;
    db.exec(&format!(
        "CREATE TRIGGER zt_s_other.log_ai AFTER INSERT ON zt_s_other.log FOR EACH ROW \
         UPDATE `{}`.t SET a = a + 1 WHERE id = NEW.n",
        db.name
    ))
    .await;
    let line = stopped_by(
        &mut db,
        "trigger",
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            "INSERT INTO zt_s_other.log VALUES (3)",
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    assert!(
        line.contains("(INSERT INTO zt_s_other.log VALUES (3)): some session writes"),
        "{line}"
    );
    db.exec("DROP DATABASE zt_s_other").await;
    let file = scratch("load-data").join("rows.csv");
    std::fs::write(&file, "1001,1\n1002,2\n").unwrap();
    let load = format!(
        "LOAD DATA INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ','",
        file.display()
    );
    let line = stopped_by(
        &mut db,
        "load",
        &[
            "SET SESSION binlog_format = 'STATEMENT'",
            &load,
            "SET SESSION binlog_format = 'ROW'",
        ],
    )
    .await;
    assert!(
        line.contains(&format!(
            "a statement-based change that may reach {target} (LOAD DATA INFILE"
        )),
        "{line}"
    );
    db.drop_db().await;
}
