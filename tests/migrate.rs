//! The migration engine end to end against the real MariaDB primary: every scenario runs with
//! writers applying random transactions to the table and to a control copy in the same
//! transaction; afterwards the new table, projected on the original columns, must equal the
//! control table row for row, and the writers must have seen no error at all.

mod common;

use std::time::Duration;

use common::fixtures::*;
use common::run::Running;
use common::writer::{Gen, KeyShape, Mix, Shape, Writers};
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

const FAST_COPY: [&str; 4] = ["--chunk-size", "200", "--chunk-time", "0.02"];

async fn migrate(db: &str, alter: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["--table", "t", "--alter", alter, "--execute", "--json"];
    args.extend_from_slice(extra);
    Running::spawn(primary_port(), db, &args, &[])
        .finish()
        .await
}

/// `SHOW CREATE TABLE` of `table` without its name and AUTO_INCREMENT counter, to compare
/// two tables' definitions.
async fn definition(conn: &mut Conn, table: &str) -> String {
    let (_, def): (String, String) = conn
        .query_first(format!("SHOW CREATE TABLE {table}"))
        .await
        .unwrap()
        .unwrap();
    def.replacen(&format!("CREATE TABLE `{table}`"), "CREATE TABLE", 1)
        .split(' ')
        .filter(|w| !w.starts_with("AUTO_INCREMENT="))
        .collect::<Vec<_>>()
        .join(" ")
}

fn summary(out: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["ok"], true, "{out}");
    v["summary"].clone()
}

async fn assert_helpers_gone(db: &mut TestDb, keep_old: bool) {
    let mut expected: Vec<String> = db
        .tables()
        .await
        .into_iter()
        .filter(|t| !t.starts_with("t_zdm"))
        .collect();
    if keep_old {
        expected.push("t_zdm_old".into());
        expected.sort();
    }
    assert_eq!(db.tables().await, expected, "helper tables left behind");
}

/// The common scenario: seed, start writers, migrate, keep writing a moment, stop, compare.
async fn under_load(
    test: &str,
    alter: &str,
    shape_cols: Vec<(&'static str, Gen, bool)>,
    new_cols: &str,
    ctl_cols: &str,
) -> TestDb {
    under_load_with(test, alter, shape_cols, new_cols, ctl_cols, &FAST_COPY).await
}

async fn under_load_with(
    test: &str,
    alter: &str,
    shape_cols: Vec<(&'static str, Gen, bool)>,
    new_cols: &str,
    ctl_cols: &str,
    args: &[&str],
) -> TestDb {
    let mut db = TestDb::new(test).await;
    std_table(&mut db, 4000).await;
    let shape = std_shape(shape_cols, 4000);
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, err) = migrate(&db.name, alter, args).await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    let s = summary(&out);
    assert_eq!(s["copied_rows"].as_u64().map(|n| n > 0), Some(true), "{s}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = writers.stop_without_errors().await;
    assert!(
        report.transactions > 50,
        "the writers barely ran: {}",
        report.transactions
    );
    let n = assert_same_rows(
        &mut db.conn,
        &format!("SELECT {new_cols} FROM t ORDER BY id"),
        &format!("SELECT {ctl_cols} FROM ctl ORDER BY id"),
    )
    .await;
    assert!(n > 1000);
    assert_helpers_gone(&mut db, true).await;
    db
}

#[tokio::test]
async fn add_column_with_default_under_load_loses_nothing() {
    let mut db = under_load(
        "m_add_col",
        "ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'fresh'",
        std_cols(),
        "id, a, b, c, d",
        "id, a, b, c, d",
    )
    .await;
    let other: Option<u64> = db
        .conn
        .query_first("SELECT COUNT(*) FROM t WHERE note <> 'fresh'")
        .await
        .unwrap();
    assert_eq!(other, Some(0));
    db.drop_db().await;
}

#[tokio::test]
async fn drop_column_under_load_loses_nothing() {
    let cols = vec![
        ("a", Gen::Int, false),
        ("b", Gen::Str, true),
        ("d", Gen::Decimal, false),
    ];
    let db = under_load(
        "m_drop_col",
        "DROP COLUMN c",
        cols,
        "id, a, b, d",
        "id, a, b, d",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn modify_to_wider_type_under_load_loses_nothing() {
    let db = under_load(
        "m_modify",
        "MODIFY a BIGINT NOT NULL, MODIFY b VARCHAR(300) NULL",
        std_cols(),
        "id, a, b, c, d",
        "id, a, b, c, d",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn renamed_column_keeps_its_values_under_load() {
    let cols = vec![
        ("a", Gen::Int, false),
        ("c", Gen::DateTime6, true),
        ("d", Gen::Decimal, false),
    ];
    let db = under_load(
        "m_rename",
        "CHANGE b b_renamed VARCHAR(120) NULL",
        cols,
        "id, a, b_renamed, c, d",
        "id, a, b, c, d",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn add_and_drop_index_under_load_loses_nothing() {
    let mut db = under_load(
        "m_index",
        "ADD INDEX kb (b), DROP INDEX ka",
        std_cols(),
        "id, a, b, c, d",
        "id, a, b, c, d",
    )
    .await;
    let mut idx: Vec<String> = db
        .conn
        .query("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY 1")
        .await
        .unwrap();
    idx.sort();
    assert_eq!(idx, vec!["PRIMARY".to_string(), "kb".to_string()]);
    db.drop_db().await;
}

#[tokio::test]
async fn composite_primary_key_under_load_loses_nothing() {
    let mut db = TestDb::new("m_composite").await;
    let def = "(k1 INT UNSIGNED NOT NULL, k2 VARCHAR(20) NOT NULL, v INT NOT NULL, w VARCHAR(50) NULL, PRIMARY KEY (k1, k2))";
    db.exec(&format!("CREATE TABLE t {def}")).await;
    db.exec(&format!("CREATE TABLE ctl {def}")).await;
    db.exec("INSERT INTO t SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq, CONCAT('w', seq) FROM seq_1_to_4000").await;
    db.exec("INSERT INTO ctl SELECT * FROM t").await;
    let shape = Shape {
        table: "t".into(),
        control: "ctl".into(),
        key: KeyShape::Composite("k1", "k2"),
        cols: vec![("v", Gen::Int, false), ("w", Gen::Emoji, true)],
        seeded: 4000,
    };
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, err) = migrate(&db.name, "ADD COLUMN z INT NULL", &FAST_COPY).await;
    assert_eq!(code, Some(0), "{err}");
    summary(&out);
    writers.stop_without_errors().await;
    assert_same_rows(
        &mut db.conn,
        "SELECT k1, k2, v, w FROM t ORDER BY k1, k2",
        "SELECT k1, k2, v, w FROM ctl ORDER BY k1, k2",
    )
    .await;
    assert_helpers_gone(&mut db, true).await;
    db.drop_db().await;
}

#[tokio::test]
async fn empty_and_one_row_tables_migrate_under_load() {
    for seeded in [0u64, 1] {
        let mut db = TestDb::new(&format!("m_small_{seeded}")).await;
        std_table(&mut db, seeded).await;
        let shape = std_shape(std_cols(), seeded);
        let writers = Writers::start(
            primary_port(),
            &db.name,
            &shape,
            1,
            Duration::from_millis(2),
            false,
        )
        .await;
        let (code, out, err) = migrate(&db.name, "ADD COLUMN note TEXT NULL", &[]).await;
        assert_eq!(code, Some(0), "{err}");
        summary(&out);
        tokio::time::sleep(Duration::from_millis(100)).await;
        writers.stop_without_errors().await;
        assert_same_as_control(&mut db.conn).await;
        assert_helpers_gone(&mut db, true).await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn every_common_type_survives_copy_and_apply() {
    let mut db = TestDb::new("m_types").await;
    let def = "(id BIGINT UNSIGNED NOT NULL PRIMARY KEY, u BIGINT UNSIGNED NULL, dec1 DECIMAL(20,6) NULL, dt DATETIME(6) NULL, \
               ts TIMESTAMP(6) NULL DEFAULT NULL, d DATE NULL, tm TIME(3) NULL, j JSON NULL, bl BLOB NULL, \
               e ENUM('a','b','c') NULL, s SET('x','y','z') NULL, bt BIT(10) NULL, txt VARCHAR(50) NULL) DEFAULT CHARSET=utf8mb4";
    db.exec(&format!("CREATE TABLE t {def}")).await;
    db.exec(&format!("CREATE TABLE ctl {def}")).await;
    db.exec(
        "INSERT INTO t SELECT seq, IF(seq % 3 = 0, 18446744073709551615, seq), seq / 3, '2024-02-29 23:59:59.999999' - INTERVAL seq MINUTE, \
         IF(seq % 5 = 0, NULL, '2030-01-01 00:00:00.5' - INTERVAL seq HOUR), '2000-01-01' + INTERVAL seq DAY, \
         SEC_TO_TIME(CAST(seq AS SIGNED) * 37 - 40000), JSON_OBJECT('n', seq, 'emoji', '😀'), UNHEX(LPAD(HEX(seq), 8, '0')), \
         ELT(1 + seq % 3, 'a', 'b', 'c'), IF(seq % 2 = 0, 'x,z', ''), seq % 1024, CONCAT('ü😀', seq) FROM seq_1_to_3000",
    )
    .await;
    db.exec("INSERT INTO t (id) VALUES (3001)").await; // a row of NULLs
    db.exec("INSERT INTO ctl SELECT * FROM t").await;
    let cols = vec![
        ("u", Gen::BigUnsigned, true),
        ("dec1", Gen::Decimal, true),
        ("dt", Gen::DateTime6, true),
        ("ts", Gen::Timestamp6, true),
        ("d", Gen::Date, true),
        ("tm", Gen::Time3, true),
        ("j", Gen::Json, true),
        ("bl", Gen::Blob, true),
        ("e", Gen::Enum, true),
        ("s", Gen::Set, true),
        ("bt", Gen::Bit10, true),
        ("txt", Gen::Emoji, true),
    ];
    let shape = Shape {
        table: "t".into(),
        control: "ctl".into(),
        key: KeyShape::Single("id"),
        cols,
        seeded: 3001,
    };
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, err) = migrate(&db.name, "ADD COLUMN extra INT NULL", &FAST_COPY).await;
    assert_eq!(code, Some(0), "{err}");
    summary(&out);
    writers.stop_without_errors().await;
    let cols = "id, u, dec1, dt, ts, d, tm, j, bl, e, s, bt, txt";
    assert_same_rows(
        &mut db.conn,
        &format!("SELECT {cols} FROM t ORDER BY id"),
        &format!("SELECT {cols} FROM ctl ORDER BY id"),
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn cutover_under_long_transaction_times_out_and_retries() {
    let mut db = TestDb::new("m_long_trx").await;
    std_table(&mut db, 2000).await;
    let shape = std_shape(std_cols(), 2000);
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        1,
        Duration::from_millis(2),
        false,
    )
    .await;
    // a transaction that has touched the table and stays open
    let mut holder = connect(primary_port()).await;
    holder
        .query_drop(format!("USE `{}`", db.name))
        .await
        .unwrap();
    holder.query_drop("START TRANSACTION").await.unwrap();
    let _: Vec<Row> = holder.query("SELECT * FROM t WHERE id = 1").await.unwrap();
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
            "--json",
        ],
        &[],
    );
    run.wait_for("holds a lock on", Duration::from_secs(60))
        .await;
    // hold it past the look-before-locking bound (2 s) and one lock attempt (1 s)
    tokio::time::sleep(Duration::from_secs(4)).await;
    holder.query_drop("COMMIT").await.unwrap();
    let (code, out, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    let s = summary(&out);
    assert!(s["cut_over"]["attempts"].as_u64().unwrap() >= 2, "{s}");
    assert!(
        err.contains("the table lock was not granted within 1 s"),
        "{err}"
    );
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

#[tokio::test]
async fn alter_the_data_cannot_satisfy_fails_naming_key_value_and_leaves_original_intact() {
    let mut db = TestDb::new("m_bad_data").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, email VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL)").await;
    // clean for the planner's 2000-row sample; duplicates and long names only further on
    db.exec(
        "INSERT INTO t SELECT seq, CONCAT('u', seq, '@x'), CONCAT('n', seq) FROM seq_1_to_5000",
    )
    .await;
    db.exec("UPDATE t SET email = 'dup@x' WHERE id IN (4001, 4002)")
        .await;
    db.exec("UPDATE t SET name = 'a-name-that-is-far-too-long' WHERE id = 4500")
        .await;
    let before = db.snapshot().await;
    let n = db.name.clone();
    let (code, _, err) = migrate(&n, "ADD UNIQUE KEY uq_email (email)", &[]).await;
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("zdm-ost: error: "))
        .unwrap();
    assert!(
        line.starts_with("zdm-ost: error: copying rows after id=")
            && line.ends_with(": the new schema rejects the data: Duplicate entry 'dup@x' for key 'uq_email' (error 1062). Nothing was renamed; the original table is untouched"),
        "{line}"
    );
    let (code, _, err) = migrate(&n, "MODIFY name VARCHAR(10) NOT NULL", &[]).await;
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("zdm-ost: error: "))
        .unwrap();
    assert!(
        line.contains(": the new schema rejects the data: Data too long for column 'name' at row ")
            && line.ends_with("(error 1406): the row with id=4500 has name='a-name-that-is-far-too-long'. Nothing was renamed; the original table is untouched"),
        "{line}"
    );
    assert_eq!(db.snapshot().await, before, "the original table changed");
    db.drop_db().await;
}

#[tokio::test]
async fn deleted_top_ids_are_not_reused_after_the_migration() {
    let mut db = TestDb::new("m_autoinc").await;
    db.exec("CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)")
        .await;
    for _ in 0..100 {
        db.exec("INSERT INTO t (v) VALUES (1)").await;
    }
    db.exec("DELETE FROM t WHERE id > 90").await;
    let (code, _, err) = migrate(&db.name, "ADD COLUMN note TEXT NULL", &[]).await;
    assert_eq!(code, Some(0), "{err}");
    db.exec("INSERT INTO t (v) VALUES (2)").await;
    let id: Option<u64> = db
        .conn
        .query_first("SELECT id FROM t WHERE v = 2")
        .await
        .unwrap();
    assert_eq!(id, Some(101));
    db.drop_db().await;
}

#[tokio::test]
async fn big_transaction_just_before_cutover_is_applied_before_the_lock() {
    let mut db = TestDb::new("m_big_trx").await;
    std_table(&mut db, 20_000).await;
    let db_name = db.name.clone();
    // The copy is paused after its first chunk; a 100k-row transaction commits meanwhile.
    let run = Running::spawn(
        primary_port(),
        &db_name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
            "--json",
        ],
        &[("ZDM_FAILPOINT", "copy=2000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    let mut big = connect(primary_port()).await;
    big.query_drop(format!("USE `{db_name}`")).await.unwrap();
    big.query_drop("START TRANSACTION").await.unwrap();
    big.query_drop("INSERT INTO t (id, a, b, c, d) SELECT 100000 + seq, seq, 'big', NULL, 1 FROM seq_1_to_100000").await.unwrap();
    big.query_drop("INSERT INTO ctl SELECT * FROM t WHERE id > 100000")
        .await
        .unwrap();
    big.query_drop("COMMIT").await.unwrap();
    let (code, out, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    let s = summary(&out);
    // the catch-up gate applied the 100k keys before locking: only a few remain for the lock
    assert!(
        s["cut_over"]["keys_under_lock"].as_u64().unwrap() < 1000,
        "{s}"
    );
    assert!(s["applied_changes"].as_u64().unwrap() >= 100_000, "{s}");
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

#[tokio::test]
async fn sigkill_in_each_phase_leaves_the_original_intact_and_a_rerun_succeeds() {
    let mut db = TestDb::new("m_sigkill").await;
    std_table(&mut db, 3000).await;
    let before = snapshot_table(&mut db.conn, "t").await;
    let alter = "ADD COLUMN note TEXT NULL";
    let args = [
        "--table",
        "t",
        "--alter",
        alter,
        "--execute",
        "--initially-drop-ghost-table",
    ];
    for (point, wait_for) in [
        ("", "phase: planned -> expanded"),
        ("copy", "failpoint copy reached"),
        ("cut-over-locked", "failpoint cut-over-locked reached"),
    ] {
        let env: Vec<(&str, &str)> = if point.is_empty() {
            vec![]
        } else {
            vec![("ZDM_FAILPOINT", point)]
        };
        let run = Running::spawn(primary_port(), &db.name, &args, &env);
        run.wait_for(wait_for, Duration::from_secs(60)).await;
        run.kill().await;
        // a killed locking session releases its locks; the queued RENAME then fails on the sentry
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            snapshot_table(&mut db.conn, "t").await,
            before,
            "original changed after a kill at {wait_for}"
        );
        let cols: Vec<String> = db.conn.query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION").await.unwrap();
        assert_eq!(
            cols,
            ["id", "a", "b", "c", "d"],
            "after a kill at {wait_for}"
        );
    }
    // leftovers make a plain run refuse; the rerun clears them and succeeds
    let (code, _, err) = migrate(&db.name, alter, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("already exists: it is the checkpoint of an interrupted migration of ")
            && err.contains("Continue that migration with --resume (same --alter), or start over with --initially-drop-ghost-table"),
        "{err}"
    );
    let (code, _, err) = migrate(&db.name, alter, &["--initially-drop-ghost-table"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_control(&mut db.conn).await;
    assert_helpers_gone(&mut db, true).await;
    db.drop_db().await;
}

async fn snapshot_table(conn: &mut Conn, t: &str) -> Vec<Vec<mysql_async::Value>> {
    rows(conn, &format!("SELECT * FROM `{t}` ORDER BY 1")).await
}

#[tokio::test]
async fn ddl_on_the_table_mid_migration_aborts_cleanly() {
    let mut db = TestDb::new("m_ddl").await;
    std_table(&mut db, 3000).await;
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
        ],
        &[("ZDM_FAILPOINT", "copy=3000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    db.exec("ALTER TABLE t ADD COLUMN sneaky INT NULL").await;
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("zdm-ost: error: "))
        .unwrap();
    assert!(
        line.starts_with("zdm-ost: error: binlog stream at mariadb-bin."),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            "`{}`.`t` was changed by another statement while migrating (ALTER TABLE t ADD COLUMN sneaky INT NULL): it alters the table. The ghost table no longer matches it; run the migration again once that change is done",
            db.name
        )),
        "{line}"
    );
    assert_helpers_gone(&mut db, false).await;
    let cols: Vec<String> = db.conn.query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION").await.unwrap();
    assert_eq!(cols, ["id", "a", "b", "c", "d", "sneaky"]);
    db.drop_db().await;
}

/// DESIGN.md "Cut-over": with helper names that sort before the table, writes queued during
/// the cut-over could land in the old table. Writes queue here on every cut-over; all of them
/// must reach the new table.
#[tokio::test]
async fn writes_queued_during_cutover_all_reach_the_new_table() {
    let mut db = TestDb::new("m_race").await;
    std_table(&mut db, 500).await;
    let shape = std_shape(std_cols(), 500);
    let writers = Writers::start(primary_port(), &db.name, &shape, 4, Duration::ZERO, true).await;
    for (i, alter) in [
        "ADD COLUMN x1 INT NULL",
        "ADD COLUMN x2 INT NULL",
        "ADD COLUMN x3 INT NULL",
    ]
    .iter()
    .enumerate()
    {
        let (code, out, err) = migrate(&db.name, alter, &["--ok-to-drop-table"]).await;
        assert_eq!(code, Some(0), "migration {i}: {err}");
        summary(&out);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    writers.stop_without_errors().await;
    let n = assert_same_as_control(&mut db.conn).await;
    assert!(n > 500);
    assert_helpers_gone(&mut db, false).await;
    db.drop_db().await;
}

#[tokio::test]
async fn sigterm_mid_copy_stops_cleanly_and_drops_the_helpers() {
    let mut db = TestDb::new("m_sigterm").await;
    std_table(&mut db, 3000).await;
    let before = snapshot_table(&mut db.conn, "t").await;
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
        ],
        &[("ZDM_FAILPOINT", "copy=3000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    let pid = run.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(
            "zdm-ost: error: interrupted: stopped cleanly; the original table is untouched"
        ),
        "{err}"
    );
    assert_eq!(snapshot_table(&mut db.conn, "t").await, before);
    assert_helpers_gone(&mut db, false).await;
    db.drop_db().await;
}

/// The binlog connection dropping mid-migration: the stream reconnects from the start of the
/// transaction it was reading, and nothing is lost.
async fn dump_threads(conn: &mut Conn) -> Vec<u64> {
    conn.query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND IN ('Binlog Dump', 'Binlog Dump GTID') ORDER BY ID")
        .await
        .unwrap()
}

#[tokio::test]
async fn killed_binlog_connection_resumes_without_losing_changes() {
    let mut db = TestDb::new("m_reconnect").await;
    std_table(&mut db, 3000).await;
    let before = dump_threads(&mut db.conn).await;
    let shape = std_shape(std_cols(), 3000);
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
            "--json",
        ],
        &[("ZDM_FAILPOINT", "copy=3000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    let ours: u64 = run
        .lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.split("binlog reader connected at ")
                .nth(1)?
                .split("connection ")
                .nth(1)?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .expect("zdm-ost logs its binlog reader's connection id");
    assert!(dump_threads(&mut db.conn).await.contains(&ours));
    assert!(!before.contains(&ours));
    db.exec(&format!("KILL {ours}")).await;
    let (code, out, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    summary(&out);
    assert!(err.contains("reconnecting from mariadb-bin."), "{err}");
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

/// The applier's connections dropping mid-migration: the keys of the batches they were
/// flushing go back to the set, the connections are re-established, and nothing is lost.
#[tokio::test]
async fn killed_applier_connections_are_reestablished_without_losing_changes() {
    let (mut db, writers) =
        std_table_with_writers("m_apply_reconnect", 3000, 2, Duration::from_millis(1)).await;
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
            "--json",
            "--apply-threads",
            "3",
        ],
        &[("ZDM_FAILPOINT", "copy=3000")],
    );
    run.wait_for("failpoint copy reached", Duration::from_secs(60))
        .await;
    let ids: Vec<u64> = run
        .lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.split_once("flush connections (")
                .map(|(_, r)| r.to_string())
        })
        .expect("zdm-ost logs its flush connections")
        .trim_end_matches(')')
        .split(", ")
        .map(|c| c.trim_start_matches("connection ").parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in &ids {
        db.exec(&format!("KILL {id}")).await;
    }
    let (code, out, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    summary(&out);
    assert!(err.contains("applier connection lost"), "{err}");
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

#[tokio::test]
async fn binlog_reader_server_id_never_clashes_with_a_replica() {
    let mut db = TestDb::new("m_server_id").await;
    std_table(&mut db, 10).await;
    // 2 is the test replica's server id (scripts/mysql-env.sh), 1 the primary's own
    for id in ["1", "2"] {
        let (code, _, err) = migrate(
            &db.name,
            "ADD COLUMN note TEXT NULL",
            &["--replica-server-id", id],
        )
        .await;
        assert_eq!(code, Some(1), "{err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("zdm-ost: error: "))
            .unwrap();
        assert!(
            line.starts_with(&format!("zdm-ost: error: --replica-server-id {id} is already used by this server or one of its replicas (ids in use: "))
                && line.ends_with("); choose another"),
            "{line}"
        );
    }
    assert_helpers_gone(&mut db, false).await;
    db.drop_db().await;
}

#[tokio::test]
async fn instant_class_change_runs_natively_without_a_copy() {
    let mut db = TestDb::new("m_instant").await;
    std_table(&mut db, 2000).await;
    let before = rows(&mut db.conn, "SELECT id, a, b, c, d FROM t ORDER BY id").await;
    let (code, out, err) = migrate(
        &db.name,
        "ADD COLUMN note TEXT NULL",
        &["--attempt-instant-ddl"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let s = summary(&out);
    assert_eq!(s["path"], "instant", "{s}");
    assert_eq!(s["copied_rows"], 0);
    assert!(
        err.contains("path: INSTANT (native metadata-only ALTER)"),
        "{err}"
    );
    let cols: Vec<String> = db
        .conn
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION")
        .await
        .unwrap();
    assert_eq!(cols, ["id", "a", "b", "c", "d", "note"]);
    assert_eq!(
        rows(&mut db.conn, "SELECT id, a, b, c, d FROM t ORDER BY id").await,
        before
    );
    assert_helpers_gone(&mut db, false).await;
    // the same change forced through the copy path
    let (code, out, err) = migrate(&db.name, "ADD COLUMN note2 TEXT NULL", &[]).await;
    assert_eq!(code, Some(0), "{err}");
    let s = summary(&out);
    assert_eq!(s["path"], "copy", "{s}");
    assert_eq!(s["copied_rows"], 2000);
    db.drop_db().await;
}

/// The copy reads through consistent snapshots, without row locks: a chunk's snapshot misses
/// what changes while it is open. Here the server reads every chunk's rows slowly (its insert
/// ends long after its snapshot) and the chunk stays open 100 ms more after it, while writers
/// delete rows everywhere;
/// the changes held back for a range must all land after its chunk commits. The checksum is
/// skipped: it would repair what this must prove.
#[tokio::test]
async fn changes_made_while_a_chunk_is_open_land_after_it() {
    let mut db = TestDb::new("m_open_chunk").await;
    std_table(&mut db, 4000).await;
    let shape = std_shape(std_cols(), 4000);
    // deletes: a row deleted behind a chunk's snapshot is the one it would resurrect (a changed
    // row would collide with its re-sync and be retried; the mixed load is in the other tests).
    // Few at a time: a flush that also touched a row the chunk had already written would wait
    // for the chunk and, by luck, remove the resurrected row too.
    let writers = Writers::start_mix(
        primary_port(),
        &db.name,
        &shape,
        1,
        Duration::from_millis(40),
        Mix::Deletes,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "MODIFY a BIGINT NOT NULL",
            "--execute",
            "--skip-checksum",
            "--chunk-size",
            "500",
            "--chunk-time",
            "5",
            "--status-interval",
            "0.1",
        ],
        &[("ZDM_FAILPOINT", "copy-slow-read~1,copy-uncommitted~100")],
    );
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    // changes were really held back for open chunks (the path under test ran)
    assert!(
        err.lines()
            .any(|l| l.contains("awaiting the copy)") && !l.contains("(+0 awaiting")),
        "no change was ever held back:\n{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

/// With an AUTO_INCREMENT column (and innodb_autoinc_lock_mode 1, MariaDB's default), every
/// INSERT ... SELECT into the ghost holds a table-level lock for its whole statement: the
/// applier's NOWAIT statements must still get their turn between long copy chunks, not wait
/// for the end of the copy.
#[tokio::test]
async fn changes_are_applied_while_long_copy_chunks_run() {
    let (mut db, writers) =
        std_table_with_writers("m_autoinc_turns", 4000, 2, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _, err) = Running::spawn(
        primary_port(),
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "MODIFY a BIGINT NOT NULL",
            "--execute",
            "--chunk-size",
            "800",
            "--chunk-time",
            "10",
            "--status-interval",
            "0.3",
        ],
        // every chunk's statement runs about 0.8 s
        &[("ZDM_FAILPOINT", "copy-slow-read~1")],
    )
    .finish()
    .await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    // the last status line of the copy, before it was done
    let applied: u64 = err
        .lines()
        .take_while(|l| !l.contains("copy done"))
        .filter_map(|l| l.split("applied ").nth(1)?.split(' ').next()?.parse().ok())
        .last()
        .unwrap_or_else(|| panic!("no status line during the copy:\n{err}"));
    assert!(
        applied > 100,
        "only {applied} changes applied during the copy:\n{err}"
    );
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    db.drop_db().await;
}

#[tokio::test]
async fn parallel_copy_and_apply_under_load_loses_nothing() {
    let db = under_load_with(
        "m_parallel",
        "MODIFY a BIGINT NOT NULL",
        std_cols(),
        "id, a, b, c, d",
        "id, a, b, c, d",
        &[
            "--threads",
            "4",
            "--apply-threads",
            "4",
            "--chunk-size",
            "100",
            "--chunk-time",
            "0.01",
        ],
    )
    .await;
    db.drop_db().await;
}

/// `CONVERT TO CHARACTER SET utf8mb4` of a latin1 table with accented text, while writers change
/// it: every row ends byte for byte as the server's own conversion of the control table leaves
/// it, and the table is defined as that conversion defines it (TEXT widened to MEDIUMTEXT).
#[tokio::test]
async fn convert_to_utf8mb4_under_load_matches_the_native_conversion() {
    let mut db = TestDb::new("m_charset").await;
    for table in ["t", "ctl"] {
        db.exec(&format!(
            "CREATE TABLE {table} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             a INT NOT NULL, b VARCHAR(100) NULL, c DATETIME(6) NULL, \
             d DECIMAL(20,6) NOT NULL DEFAULT 0, e TEXT NULL, KEY ka (a), KEY kb (b)) CHARSET latin1"
        ))
        .await;
    }
    db.exec(
        "INSERT INTO t (id, a, b, c, d, e) SELECT seq, seq % 1000, CONCAT('café ', seq, ' Ñandú'), \
         '2024-01-01' + INTERVAL seq SECOND, seq / 7, CONCAT('über ', seq, ' ç') FROM seq_1_to_3000",
    )
    .await;
    db.exec("INSERT INTO ctl SELECT * FROM t").await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &std_shape(std_cols(), 3000),
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    let alter = "CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci";
    let (code, _, err) = migrate(&db.name, alter, &FAST_COPY).await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    writers.stop_without_errors().await;
    db.exec(&format!("ALTER TABLE ctl {alter}")).await;
    let n = assert_same_rows(
        &mut db.conn,
        "SELECT id, a, HEX(b), c, d, HEX(e) FROM t ORDER BY id",
        "SELECT id, a, HEX(b), c, d, HEX(e) FROM ctl ORDER BY id",
    )
    .await;
    assert!(n >= 3000, "{n} rows");
    // rows the writers left alone still hold their accented text, now in utf8mb4
    let accented: Option<u64> = db
        .conn
        .query_first(
            "SELECT COUNT(*) FROM t WHERE b LIKE 'café % Ñandú' AND e LIKE 'über % ç' \
             AND CHARSET(b) = 'utf8mb4'",
        )
        .await
        .unwrap();
    assert!(accented.unwrap_or(0) > 100, "{accented:?}");
    let defs = [
        definition(&mut db.conn, "t").await,
        definition(&mut db.conn, "ctl").await,
    ];
    assert_eq!(defs[0], defs[1]);
    assert!(defs[0].contains("`e` mediumtext"), "{}", defs[0]);
    db.drop_db().await;
}

/// New NOT NULL columns without a DEFAULT get, in every existing row and every row the writers
/// touch before the swap, the value a native ALTER gives them (left out of the copy's INSERT
/// they failed it: "Field 'x' doesn't have a default value"). The control table gets the same
/// ALTER natively afterwards; the two must then agree row by row on every column.
#[tokio::test]
async fn new_not_null_columns_without_a_default_are_filled_as_a_native_alter_fills_them() {
    let (mut db, writers) =
        std_table_with_writers("m_notnull", 3000, 2, Duration::from_millis(1)).await;
    let alter = "ADD COLUMN x INT NOT NULL, ADD COLUMN e ENUM('b','a') NOT NULL, \
                 ADD COLUMN dt DATETIME(3) NOT NULL, ADD COLUMN s VARCHAR(5) NOT NULL, \
                 ADD COLUMN y INT NOT NULL DEFAULT 5";
    let mut args = vec!["--table", "t", "--alter", alter, "--execute"];
    args.extend_from_slice(&FAST_COPY);
    // the writers stop before the swap: after it, their INSERTs (which do not name x) would
    // fail against the new table, as they would after a native ALTER
    let run = Running::spawn(
        primary_port(),
        &db.name,
        &args,
        &[("ZDM_FAILPOINT", "cut-over-start=1000")],
    );
    run.wait_for("failpoint cut-over-start reached", Duration::from_secs(60))
        .await;
    writers.stop_without_errors().await;
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    assert_same_as_control(&mut db.conn).await;
    db.exec(&format!("ALTER TABLE ctl {alter}")).await;
    let n = assert_same_rows(
        &mut db.conn,
        "SELECT id, x, e, dt, s, y FROM t ORDER BY id",
        "SELECT id, x, e, dt, s, y FROM ctl ORDER BY id",
    )
    .await;
    assert!(n >= 3000, "{n} rows");
    let filled: (u64, String) = db
        .conn
        .query_first("SELECT COUNT(*), MIN(e) FROM t WHERE x = 0 AND s = '' AND y = 5")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(filled, (n as u64, "b".to_string()));
    db.drop_db().await;
}

/// `--defer-indexes always`: the ghost is copied without its secondary indexes, which are built
/// afterwards while the writers keep going; the new table must hold the rows of the control
/// table and be defined exactly as the server defines the table the ALTER makes.
#[tokio::test]
async fn deferred_secondary_indexes_end_up_as_the_alter_defines_them() {
    let (mut db, writers) =
        std_table_with_writers("m_defer", 4000, 2, Duration::from_millis(1)).await;
    let alter = "ADD INDEX kb (b(10), a), ADD UNIQUE KEY ud (d, id), MODIFY a BIGINT NOT NULL";
    // the reference: the same ALTER run by the server on a copy of the definition (ctl is
    // defined as t was)
    db.exec("CREATE TABLE ref LIKE ctl").await;
    db.exec(&format!("ALTER TABLE ref {alter}")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut args = vec!["--defer-indexes", "always", "--status-interval", "0.1"];
    args.extend_from_slice(&FAST_COPY);
    let (code, out, err) = migrate(&db.name, alter, &args).await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    assert!(
        err.contains("secondary index(es) ka, kb left out of the ghost until the copy is done"),
        "{err}"
    );
    assert!(
        err.contains("secondary index(es) ka, kb built in "),
        "{err}"
    );
    let s = summary(&out);
    assert!(s["index_ms"].is_u64(), "{s}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    let defs = [
        definition(&mut db.conn, "t").await,
        definition(&mut db.conn, "ref").await,
    ];
    assert_eq!(defs[0], defs[1]);
    db.drop_db().await;
}

/// `--defer-indexes auto` (the default) leaves the secondary indexes out of the copy whether
/// or not the table is being written, when the buffer pool has room (the test bed's 512M holds
/// this table many times over); rows written during the copy reach the rebuilt indexes.
#[tokio::test]
async fn auto_defers_indexes_of_a_table_being_written() {
    let mut db = TestDb::new("m_defer_auto").await;
    std_table(&mut db, 2000).await;
    let mut args = vec!["--ok-to-drop-table"];
    args.extend_from_slice(&FAST_COPY);
    let (code, _, err) = migrate(&db.name, "MODIFY a BIGINT NOT NULL", &args).await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    assert!(
        err.contains("secondary index(es) ka left out of the ghost until the copy is done"),
        "{err}"
    );
    assert_same_as_control(&mut db.conn).await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &std_shape(std_cols(), 2000),
        2,
        Duration::from_millis(1),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _, err) = migrate(&db.name, "MODIFY a INT NOT NULL", &args).await;
    assert_eq!(code, Some(0), "migration failed:\n{err}");
    assert!(
        err.contains("secondary index(es) ka left out of the ghost until the copy is done"),
        "{err}"
    );
    assert!(err.contains("secondary index(es) ka built in "), "{err}");
    writers.stop_without_errors().await;
    assert_same_as_control(&mut db.conn).await;
    // the rebuilt index holds every row, those written during the copy included
    let (by_index, by_table): (u64, u64) = db
        .conn
        .query_first("SELECT (SELECT COUNT(*) FROM t FORCE INDEX (ka)), (SELECT COUNT(*) FROM t IGNORE INDEX (ka))")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_index, by_table);
    db.drop_db().await;
}
