//! Fidelity: every key type, charset, collation and time zone survives the migration.
//!
//! The type matrix: one table per key type, seeded, migrated with the cut-over postponed; once
//! zdm-ost waits for the cut-over (copy and checksum done), an insert, a non-key update, a
//! key-changing update and a delete reach the ghost only through the binlog key path (binlog
//! value -> key -> predicate). Each is made in the same transaction on a control table; after
//! the cut-over the table must equal the control row for row, byte for byte.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fixtures::*;
use common::run::postponed;
use common::writer::{Gen, KeyShape, Shape, Writers};
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// One key type of the matrix.
struct Case {
    name: &'static str,
    /// The key columns' definitions.
    cols: &'static str,
    /// The key columns, in the key's order.
    key: &'static [&'static str],
    /// Key values, one SQL literal per key column: the seeded rows, then the row inserted after
    /// the checksum, then the new key of the key-changing update. Rows 0, 1 and 2 get the
    /// non-key update, the key change and the delete.
    vals: &'static [&'static [&'static str]],
    alter: &'static str,
    /// More rows for `{t}` (so the copy runs in several chunks), or "".
    bulk: &'static str,
}

const ADD: &str = "ADD COLUMN note INT NULL";

const fn case(
    name: &'static str,
    cols: &'static str,
    vals: &'static [&'static [&'static str]],
) -> Case {
    Case {
        name,
        cols,
        key: &["k"],
        vals,
        alter: ADD,
        bulk: "",
    }
}

fn matrix() -> Vec<Case> {
    vec![
        case("ti", "k TINYINT NOT NULL", &[&["-128"], &["127"], &["0"], &["-1"], &["1"]]),
        case(
            "biu",
            "k BIGINT UNSIGNED NOT NULL",
            &[&["0"], &["18446744073709551615"], &["9223372036854775808"], &["1"], &["18446744073709551614"]],
        ),
        case("mi", "k MEDIUMINT NOT NULL", &[&["-8388608"], &["8388607"], &["-1"], &["0"], &["-8388607"]]),
        case(
            "dec",
            "k DECIMAL(20,6) NOT NULL",
            &[&["-99999999999999.999999"], &["0.000001"], &["12345678901234.5"], &["-0.000001"], &["99999999999999.999999"]],
        ),
        case("dt", "k DATE NOT NULL", &[&["'0000-00-00'"], &["'1000-01-01'"], &["'9999-12-31'"], &["'2000-01-00'"], &["'2024-02-29'"]]),
        case("tm0", "k TIME NOT NULL", &[&["'-838:59:59'"], &["'838:59:59'"], &["'00:00:00'"], &["'-00:00:01'"], &["'12:00:00'"]]),
        case(
            "tm6",
            "k TIME(6) NOT NULL",
            &[&["'-838:59:58.999999'"], &["'00:00:00.000001'"], &["'-00:00:00.000001'"], &["'838:59:58.5'"], &["'01:02:03.4'"]],
        ),
        case(
            "dtm0",
            "k DATETIME NOT NULL",
            &[&["'0000-00-00 00:00:00'"], &["'1000-01-01 00:00:00'"], &["'9999-12-31 23:59:59'"], &["'2000-00-00 00:00:00'"], &["'1970-01-01 00:00:00'"]],
        ),
        case(
            "dtm3",
            "k DATETIME(3) NOT NULL",
            &[&["'0000-00-00 00:00:00.000'"], &["'2024-01-02 03:04:05.123'"], &["'9999-12-31 23:59:59.999'"], &["'2024-01-02 03:04:05.120'"], &["'1000-01-01 00:00:00.001'"]],
        ),
        case(
            "dtm6",
            "k DATETIME(6) NOT NULL",
            &[&["'1000-01-01 00:00:00.000001'"], &["'9999-12-31 23:59:59.999999'"], &["'0000-00-00 00:00:00'"], &["'2024-01-02 03:04:05.000010'"], &["'2024-01-02 03:04:05.100000'"]],
        ),
        case(
            "ts0",
            "k TIMESTAMP NOT NULL DEFAULT '2000-01-01 00:00:00'",
            &[&["'0000-00-00 00:00:00'"], &["'1970-01-01 00:00:01'"], &["'2038-01-19 03:14:07'"], &["'2000-06-01 12:00:00'"], &["'2024-03-31 02:30:00'"]],
        ),
        case(
            "ts6",
            "k TIMESTAMP(6) NOT NULL DEFAULT '2000-01-01 00:00:00'",
            &[&["'0000-00-00 00:00:00'"], &["'2024-01-02 03:04:05.654321'"], &["'2038-01-19 03:14:07.999999'"], &["'2024-01-02 03:04:05.000001'"], &["'1970-01-01 00:00:01.5'"]],
        ),
        case("yr", "k YEAR NOT NULL", &[&["0"], &["1901"], &["2155"], &["2000"], &["1999"]]),
        case(
            "l1c",
            "k CHAR(8) CHARACTER SET latin1 NOT NULL",
            &[&["_latin1 X'F6'"], &["'é'"], &["'a  '"], &["_latin1 X'E9F6'"], &["'b'"]],
        ),
        case(
            "l1v",
            "k VARCHAR(8) CHARACTER SET latin1 COLLATE latin1_german1_ci NOT NULL",
            &[&["_latin1 X'F6'"], &["'é '"], &["'ß'"], &["_latin1 X'E9F6'"], &["'x '"]],
        ),
        case(
            "u3",
            "k VARCHAR(8) CHARACTER SET utf8mb3 NOT NULL",
            &[&["'ä€'"], &["'a '"], &["'Ω'"], &["'ü'"], &["'€ '"]],
        ),
        case(
            "u4",
            "k VARCHAR(8) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL",
            &[&["'😀'"], &["'héllo'"], &["'b  '"], &["'✓😀'"], &["'z'"]],
        ),
        case(
            "nopad",
            "k VARCHAR(8) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL",
            &[&["'a'"], &["'a '"], &["'a  '"], &["'b '"], &["'b'"]],
        ),
        case(
            "vbinc",
            "k VARCHAR(8) CHARACTER SET binary NOT NULL",
            &[&["X'00'"], &["X'FF00'"], &["X'C3'"], &["X'0000'"], &["X'61'"]],
        ),
        case(
            "bin16",
            "k BINARY(16) NOT NULL",
            &[&["X'00112233445566778899AABBCCDDEE00'"], &["X'00'"], &["X'FF000000000000000000000000000000'"], &["X'0102030405060708090A0B0C0D0E0F00'"], &["X'AB0000'"]],
        ),
        case(
            "vbin",
            "k VARBINARY(8) NOT NULL",
            &[&["X'0100'"], &["X'01'"], &["X'00'"], &["X'010000'"], &["X''"]],
        ),
        case("en", "k ENUM('b','a','c','d') NOT NULL", &[&["'a'"], &["'b'"], &["'c'"], &["''"], &["'d'"]]),
        case("st", "k SET('x','y','z') NOT NULL", &[&["'x,z'"], &["''"], &["'y'"], &["'x,y,z'"], &["'z'"]]),
        // the 64th member makes the value negative as the server compares it
        case(
            "st64",
            "k SET('s0','s1','s2','s3','s4','s5','s6','s7','s8','s9','s10','s11','s12','s13','s14','s15','s16','s17','s18','s19','s20','s21','s22','s23','s24','s25','s26','s27','s28','s29','s30','s31','s32','s33','s34','s35','s36','s37','s38','s39','s40','s41','s42','s43','s44','s45','s46','s47','s48','s49','s50','s51','s52','s53','s54','s55','s56','s57','s58','s59','s60','s61','s62','s63') NOT NULL",
            &[&["'s63'"], &["'s0'"], &["'s0,s63'"], &["'s1,s63'"], &["'s62,s63'"]],
        ),
        case("bit", "k BIT(10) NOT NULL", &[&["b'1000000001'"], &["0"], &["1023"], &["512"], &["2"]]),
        case("bit64", "k BIT(64) NOT NULL", &[&["0xFFFFFFFFFFFFFFFF"], &["0"], &["0x8000000000000000"], &["1"], &["0x7FFFFFFFFFFFFFFF"]]),
        case(
            "uuid",
            "k UUID NOT NULL",
            &[&["'00112233-4455-1677-8899-aabbccddeeff'"], &["'00112233-4455-6677-8899-aabbccddee00'"], &["'ffffffff-ffff-4fff-bfff-ffffffffffff'"], &["'00000000-0000-0000-0000-000000000000'"], &["'12345678-1234-7234-a234-123456789abc'"]],
        ),
        case("inet4", "k INET4 NOT NULL", &[&["'0.0.0.0'"], &["'255.255.255.255'"], &["'10.0.0.1'"], &["'1.2.3.0'"], &["'192.168.0.1'"]]),
        case(
            "inet6",
            "k INET6 NOT NULL",
            &[&["'::'"], &["'::ffff:1.2.3.4'"], &["'fe80::1'"], &["'2001:db8::ff00:42:8329'"], &["'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00'"]],
        ),
        Case {
            name: "mix",
            cols: "a VARCHAR(6) CHARACTER SET latin1 NOT NULL, b BINARY(4) NOT NULL, c ENUM('x','y') NOT NULL, d TIMESTAMP(3) NOT NULL DEFAULT '2000-01-01 00:00:00', e DECIMAL(6,2) NOT NULL",
            key: &["a", "b", "c", "d", "e"],
            vals: &[
                &["_latin1 X'F6'", "X'01000000'", "'y'", "'0000-00-00 00:00:00'", "-1.5"],
                &["_latin1 X'F6'", "X'01000000'", "'x'", "'2024-01-02 03:04:05.1'", "0"],
                &["'a '", "X'00000000'", "'y'", "'2030-01-01 00:00:00'", "9999.99"],
                &["_latin1 X'F6'", "X'01000000'", "'x'", "'0000-00-00 00:00:00'", "-1.5"],
                &["'a '", "X'00000001'", "'x'", "'2030-01-01 00:00:00.001'", "1"],
            ],
            alter: ADD,
            // 600 more rows: the copy and the checksum bound chunks with every type of the key
            bulk: "INSERT INTO {t} (a, b, c, d, e, v) SELECT CONCAT(CHAR(0xE0 + seq % 20 USING latin1), seq % 7), \
                   UNHEX(LPAD(HEX(seq * 256), 8, '0')), 1 + seq % 2, FROM_UNIXTIME(1000000000 + seq * 3600.25), \
                   seq % 50 - 25.5, seq FROM seq_1_to_600",
        },
        Case {
            name: "enapp",
            cols: "k ENUM('b','a','c','e','f') NOT NULL",
            key: &["k"],
            vals: &[&["'a'"], &["'b'"], &["'c'"], &["'e'"], &["'f'"]],
            alter: "MODIFY k ENUM('b','a','c','e','f','g') NOT NULL",
            bulk: "",
        },
        Case {
            name: "widen",
            cols: "k INT NOT NULL, s VARCHAR(4) CHARACTER SET latin1 NOT NULL",
            key: &["k", "s"],
            vals: &[&["-1", "_latin1 X'F6'"], &["2147483647", "'a'"], &["0", "''"], &["5", "'é'"], &["-2147483648", "'z '"]],
            alter: "MODIFY k BIGINT NOT NULL, MODIFY s VARCHAR(20) CHARACTER SET latin1 NOT NULL",
            bulk: "INSERT INTO {t} (k, s, v) SELECT seq, CHAR(0xC0 + seq % 60 USING latin1), seq FROM seq_1_to_600",
        },
    ]
}

fn tuple(v: &[&str]) -> String {
    format!("({})", v.join(", "))
}

/// Runs one case of the matrix on the server at `port`, in database `db`; panics with what
/// differs.
async fn run_case(port: u16, db: &str, c: &Case) {
    let mut conn = Conn::new(opts(port, "root", None, Some(db))).await.unwrap();
    // zero dates, the ENUM's empty member: values an application may hold
    conn.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        .await
        .unwrap();
    let (t, ctl) = (format!("k_{}", c.name), format!("k_{}_ctl", c.name));
    let key = c.key.join(", ");
    let n = c.vals.len() - 2;
    for table in [&t, &ctl] {
        conn.query_drop(format!(
            "CREATE TABLE `{table}` ({}, v INT NOT NULL, PRIMARY KEY ({key}))",
            c.cols
        ))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        for (i, v) in c.vals[..n].iter().enumerate() {
            conn.query_drop(format!(
                "INSERT INTO `{table}` ({key}, v) VALUES ({}, {i})",
                v.join(", ")
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: seeding {v:?}: {e}", c.name));
        }
        if !c.bulk.is_empty() {
            let sql = c.bulk.replace("{t}", &format!("`{table}`"));
            conn.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {sql}: {e}", c.name));
        }
    }
    let (run, flag) = postponed(
        port,
        db,
        c.name,
        &[
            "--table",
            &t,
            "--alter",
            c.alter,
            "--execute",
            "--chunk-size",
            "10",
        ],
    )
    .await;
    let row = |i: usize| tuple(c.vals[i]);
    let set: Vec<String> = c
        .key
        .iter()
        .zip(c.vals[n + 1].iter())
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let ops = [
        format!(
            "INSERT INTO {{t}} ({key}, v) VALUES ({}, 1000)",
            c.vals[n].join(", ")
        ),
        format!("UPDATE {{t}} SET v = v + 100 WHERE ({key}) = {}", row(0)),
        format!(
            "UPDATE {{t}} SET {} WHERE ({key}) = {}",
            set.join(", "),
            row(1)
        ),
        format!("DELETE FROM {{t}} WHERE ({key}) = {}", row(2)),
        format!("UPDATE {{t}} SET v = v + 1 WHERE ({key}) = {}", row(n)),
    ];
    for op in &ops {
        conn.query_drop("START TRANSACTION").await.unwrap();
        for table in [&t, &ctl] {
            let sql = op.replace("{t}", &format!("`{table}`"));
            conn.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {sql}: {e}", c.name));
        }
        conn.query_drop("COMMIT").await.unwrap();
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{}: zdm-ost failed:\n{err}", c.name);
    let hex: Vec<String> = c.key.iter().map(|k| format!("HEX(CONCAT({k}))")).collect();
    let select =
        |table: &str| format!("SELECT {}, v FROM `{table}` ORDER BY {key}", hex.join(", "));
    let (a, b) = (
        rows(&mut conn, &select(&t)).await,
        rows(&mut conn, &select(&ctl)).await,
    );
    assert_eq!(
        a, b,
        "{}: the migrated table differs from the control table (left: migrated, right: control)",
        c.name
    );
    let bulk = if c.bulk.is_empty() { 0 } else { 600 };
    assert_eq!(a.len(), n + bulk, "{}: expected {} rows", c.name, n + bulk);
    let _ = conn.disconnect().await;
}

/// Runs cases four at a time (each a zdm-ost process of its own).
async fn run_all(port: u16, db: &str, cases: Vec<Case>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut set = tokio::task::JoinSet::new();
    for c in cases {
        let gate = Arc::clone(&gate);
        let db = db.to_string();
        set.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            run_case(port, &db, &c).await;
        });
    }
    let mut failed = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    assert!(failed.is_empty(), "cases failed:\n{}", failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_type_survives_changes_made_after_the_checksum() {
    let db = TestDb::new("f_matrix").await;
    run_all(primary_port(), &db.name.clone(), matrix()).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_binary16_uuid_keys_lose_nothing_under_load() {
    let mut db = TestDb::new("f_uuid_load").await;
    let def = "(id BINARY(16) NOT NULL PRIMARY KEY, a INT NOT NULL, b VARCHAR(100) NULL, \
               d DECIMAL(20,6) NOT NULL DEFAULT 0, KEY ka (a))";
    let seeded = 4000u64;
    for t in ["t", "ctl"] {
        db.exec(&format!("CREATE TABLE {t} {def}")).await;
        for lo in (1..=seeded).step_by(500) {
            let ns: Vec<u64> = (lo..lo + 500).collect();
            let marks = vec!["(?, ?, ?, ?)"; ns.len()].join(", ");
            let params: Vec<mysql_async::Value> = ns
                .iter()
                .flat_map(|&n| {
                    [
                        common::writer::uuid16(n).into(),
                        (n as i64 % 1000).into(),
                        format!("b{n}").into(),
                        format!("{}.5", n).into(),
                    ]
                })
                .collect();
            db.conn
                .exec_drop(
                    format!("INSERT INTO {t} (id, a, b, d) VALUES {marks}"),
                    params,
                )
                .await
                .unwrap();
        }
    }
    let shape = Shape {
        table: "t".into(),
        control: "ctl".into(),
        key: KeyShape::Binary16("id"),
        cols: vec![
            ("a", Gen::Int, false),
            ("b", Gen::Str, true),
            ("d", Gen::Decimal, false),
        ],
        seeded,
    };
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &shape,
        4,
        Duration::from_millis(2),
        false,
    )
    .await;
    // the cut-over waits two seconds after the checksum: every change then reaches the ghost
    // through the binlog key path only
    let (run, flag) = postponed(
        primary_port(),
        &db.name,
        "uuid-load",
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note TEXT NULL",
            "--execute",
            "--chunk-size",
            "500",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    let report = writers.stop_without_errors().await;
    assert_eq!(code, Some(0), "{err}");
    assert!(report.transactions > 500, "{report:?}");
    let n = assert_same_rows(
        &mut db.conn,
        "SELECT HEX(id), a, b, d FROM t ORDER BY id",
        "SELECT HEX(id), a, b, d FROM ctl ORDER BY id",
    )
    .await;
    let zero_ended: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM t WHERE RIGHT(id, 1) = X'00'")
        .await
        .unwrap()
        .unwrap();
    assert!(zero_ended > 500, "{zero_ended} of {n} keys end in 0x00");
    db.drop_db().await;
}

/// The `zdm-ost: error:` line of a dry run of `alter` on table `t`.
async fn refusal(db: &str, alter: &str) -> String {
    let o = zdm(db, &["--table", "t", "--alter", alter]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    error_line(&stderr(&o))
}

#[tokio::test]
async fn a_key_whose_order_or_equality_the_alter_changes_is_refused_at_the_plan() {
    let mut db = TestDb::new("f_keyorder").await;
    db.exec(
        "CREATE TABLE t (k VARCHAR(10) CHARACTER SET latin1 NOT NULL PRIMARY KEY, \
         e ENUM('a','b') NOT NULL, v INT) CHARACTER SET latin1",
    )
    .await;
    db.exec("INSERT INTO t VALUES (_latin1 X'F6', 'a', 1), ('10', 'b', 2), ('9', 'a', 3)")
        .await;
    let tail = ". A range or a lookup by such a key would mean different rows in the original and the new table. \
                Change the key's type, charset or collation in its own step (a native ALTER), or keep a primary or \
                unique key over NOT NULL columns that this ALTER leaves as it is, which zdm-ost then uses";
    assert_eq!(
        refusal(&db.name, "CONVERT TO CHARACTER SET utf8mb4").await,
        format!(
            "zdm-ost: error: plan: the ALTER changes how every key that could identify rows of `t` compares: \
             PRIMARY (`k` changes from varchar(10) COLLATE latin1_swedish_ci to varchar(10) COLLATE utf8mb4_general_ci){tail}"
        )
    );
    assert_eq!(
        refusal(&db.name, "MODIFY k INT NOT NULL").await,
        format!(
            "zdm-ost: error: plan: the ALTER changes how every key that could identify rows of `t` compares: \
             PRIMARY (`k` changes from varchar(10) COLLATE latin1_swedish_ci to int(11)){tail}"
        )
    );
    db.exec("ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (e, k)")
        .await;
    let before = db.snapshot().await;
    let reorder = refusal(&db.name, "MODIFY e ENUM('b','a') NOT NULL").await;
    assert!(
        reorder.contains("PRIMARY (`e` changes from enum('a','b') COLLATE latin1_swedish_ci to enum('b','a') COLLATE latin1_swedish_ci)"),
        "{reorder}"
    );
    assert_eq!(db.snapshot().await, before, "the refusal changed something");
    db.drop_db().await;
}

/// A throwaway server whose system time zone is Europe/Berlin (daylight saving) and whose
/// binlog carries no column metadata (`binlog_row_metadata=NO_LOG`, MariaDB's default): the
/// test sets its global `time_zone` itself.
async fn berlin_instance(name: &str, port: u16) -> Conn {
    let status = std::process::Command::new(repo_root().join("scripts/mysql-env.sh"))
        .args(["start-instance", name, &port.to_string()])
        .arg("--binlog-row-metadata=NO_LOG")
        .env("TZ", "Europe/Berlin")
        .status()
        .expect("run scripts/mysql-env.sh");
    assert!(
        status.success(),
        "starting instance {name} on {port} failed"
    );
    let mut c = connect(port).await;
    c.query_drop(format!(
        "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`; USE `{name}`"
    ))
    .await
    .unwrap();
    c
}

/// Values zdm-ost computes (a DATETIME becoming a TIMESTAMP and back, a CURRENT_TIMESTAMP
/// default filled into existing rows, a stored generated column over a TIMESTAMP) equal what
/// the server's own ALTER computes on a server at +05:00; TIMESTAMP keys and every other key of
/// the matrix survive the binlog path there, without binlog column metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_and_keys_follow_a_non_utc_server_time_zone() {
    let (name, port) = ("zt_tz", 3318);
    let mut c = berlin_instance(name, port).await;
    c.query_drop("SET GLOBAL time_zone = '+05:00'")
        .await
        .unwrap();
    // a new session, in the server's zone as applications have it
    let mut c = Conn::new(opts(port, "root", None, Some(name)))
        .await
        .unwrap();
    c.query_drop("SET time_zone = @@GLOBAL.time_zone")
        .await
        .unwrap();
    let def =
        "(id INT NOT NULL PRIMARY KEY, dt DATETIME(3) NOT NULL, ts TIMESTAMP(3) NULL DEFAULT NULL)";
    let alter = "MODIFY dt TIMESTAMP(3) NOT NULL DEFAULT '2000-01-01 00:00:00', MODIFY ts DATETIME(3) NULL, \
                 ADD COLUMN added DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, \
                 ADD COLUMN g BIGINT AS (UNIX_TIMESTAMP(dt)) STORED";
    for t in ["n", "n_native"] {
        c.query_drop(format!("CREATE TABLE {t} {def}"))
            .await
            .unwrap();
        c.query_drop(format!(
            "INSERT INTO {t} VALUES (1, '2024-01-02 12:00:00.5', '2024-01-02 12:00:00.25'), \
             (2, '2024-07-01 00:30:00', NULL), (3, '1999-12-31 23:59:59.999', '2038-01-19 08:14:07')"
        ))
        .await
        .unwrap();
    }
    c.query_drop(format!("ALTER TABLE n_native {alter}"))
        .await
        .unwrap();
    let (run, flag) = postponed(
        port,
        name,
        "tz",
        &["--table", "n", "--alter", alter, "--execute"],
    )
    .await;
    for t in ["n", "n_native"] {
        c.query_drop(format!(
            "INSERT INTO {t} (id, dt, ts) VALUES (4, '2024-03-31 12:00:00', '2024-10-27 02:30:00')"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "UPDATE {t} SET dt = '2000-06-15 06:00:00' WHERE id = 2"
        ))
        .await
        .unwrap();
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    let cols = "id, dt, ts, g, ABS(TIMESTAMPDIFF(SECOND, added, NOW())) < 600";
    let n = assert_same_rows(
        &mut c,
        &format!("SELECT {cols} FROM n ORDER BY id"),
        &format!("SELECT {cols} FROM n_native ORDER BY id"),
    )
    .await;
    assert_eq!(n, 4);
    assert_eq!(
        rows(&mut c, "SELECT CAST(dt AS CHAR) FROM n WHERE id = 1").await,
        vec![vec![mysql_async::Value::Bytes(
            b"2024-01-02 12:00:00.500".to_vec()
        )]],
        "a DATETIME turned TIMESTAMP keeps its wall-clock value"
    );
    run_all(port, name, matrix()).await;
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn a_timestamp_key_under_daylight_saving_is_refused_and_the_servers_sql_mode_decides() {
    let (name, port) = ("zt_dst", 3319);
    let mut c = berlin_instance(name, port).await;
    c.query_drop("SET GLOBAL time_zone = 'SYSTEM'")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE t (ts TIMESTAMP NOT NULL PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let system: String = c
        .query_first("SELECT @@system_time_zone")
        .await
        .unwrap()
        .unwrap();
    let o = zdm_raw(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--database",
        name,
        "--table",
        "t",
        "--alter",
        ADD,
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_line(&stderr(&o)),
        format!(
            "zdm-ost: error: plan: the key PRIMARY of `t` has the TIMESTAMP column `ts`, and the server's time zone \
             (SYSTEM, which is {system}) has daylight saving: one local hour a year names two instants, so rows could \
             not be found by key. Use another unique key over NOT NULL columns, or run on a server whose time_zone is \
             UTC or a fixed offset such as '+05:00'"
        )
    );
    c.query_drop("SET GLOBAL time_zone = '+01:00'")
        .await
        .unwrap();
    let o = zdm_raw(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--database",
        name,
        "--table",
        "t",
        "--alter",
        ADD,
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));

    // the server's NO_ZERO_DATE decides as it does for a native ALTER (1067 on the default)
    c.query_drop(
        "SET GLOBAL sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
    )
    .await
    .unwrap();
    c.query_drop(
        "SET SESSION sql_mode = ''; \
         CREATE TABLE z (id INT NOT NULL PRIMARY KEY, dt DATETIME NOT NULL DEFAULT '1970-00-00 00:00:00')",
    )
    .await
    .unwrap();
    let native = c
        .query_drop("SET SESSION sql_mode = @@GLOBAL.sql_mode; CREATE TABLE z2 LIKE z; ALTER TABLE z2 ENGINE=InnoDB")
        .await
        .unwrap_err()
        .to_string();
    let o = zdm_raw(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--database",
        name,
        "--table",
        "z",
        "--alter",
        "ENGINE=InnoDB",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_line(&stderr(&o)),
        "zdm-ost: error: plan: the server cannot copy the definition of `z` under its sql_mode: \
         Invalid default value for 'dt' (error 1067). A native ALTER TABLE of it fails the same way; \
         fix the table's definition first (for example its DEFAULT), in a session whose sql_mode allows the old one",
        "the native ALTER said: {native}"
    );
    c.query_drop("SET GLOBAL sql_mode = DEFAULT").await.unwrap();
}

/// Swaps `pos` (a UNIQUE column) between two random rows, on `t` and `ctl` in one transaction,
/// until `stop`; returns the swaps made.
async fn swapper(
    port: u16,
    db: String,
    rows: u64,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = Conn::new(opts(port, "root", None, Some(&db)))
        .await
        .unwrap();
    let mut swaps = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (a, b) = (rng.gen_range(1..=rows), rng.gen_range(1..=rows));
        if a == b {
            continue;
        }
        c.query_drop("START TRANSACTION").await.unwrap();
        for t in ["t", "ctl"] {
            let sql = format!(
                "SELECT pos FROM {t} WHERE id IN ({a}, {b}) ORDER BY id = {a} DESC FOR UPDATE"
            );
            let p: Vec<i64> = c.query(&sql).await.unwrap();
            for s in [
                format!("UPDATE {t} SET pos = -pos WHERE id = {a}"),
                format!("UPDATE {t} SET pos = {} WHERE id = {b}", p[0]),
                format!("UPDATE {t} SET pos = {} WHERE id = {a}", p[1]),
            ] {
                c.query_drop(&s)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
        c.query_drop("COMMIT").await.unwrap();
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    swaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_values_moving_between_rows_never_fail_the_copy() {
    let mut db = TestDb::new("f_swaps").await;
    let rows = 20_000u64;
    for t in ["t", "ctl"] {
        db.exec(&format!(
            "CREATE TABLE {t} (id INT NOT NULL PRIMARY KEY, pos INT NOT NULL, v VARCHAR(40), UNIQUE KEY upos (pos))"
        ))
        .await;
    }
    db.exec(&format!(
        "INSERT INTO t SELECT seq, seq, MD5(seq) FROM seq_1_to_{rows}"
    ))
    .await;
    db.exec("INSERT INTO ctl SELECT * FROM t").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swappers: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(swapper(
                primary_port(),
                db.name.clone(),
                rows,
                i,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let (run, flag) = postponed(
        primary_port(),
        &db.name,
        "swaps",
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note INT NULL",
            "--execute",
            "--chunk-size",
            "200",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut swaps = 0;
    for s in swappers {
        swaps += s.await.unwrap();
    }
    assert_eq!(code, Some(0), "{err}");
    assert!(swaps > 50, "only {swaps} swaps");
    assert_same_rows(
        &mut db.conn,
        "SELECT id, pos, v FROM t ORDER BY id",
        "SELECT id, pos, v FROM ctl ORDER BY id",
    )
    .await;
    db.drop_db().await;
}

/// The plan's native check reports a copy statement that computes other values than the
/// server's own ALTER, naming the column and the first row (a deliberately wrong statement
/// stands for a computation zdm-ost gets wrong).
#[tokio::test]
async fn the_plan_catches_a_copy_that_computes_other_values_than_the_servers_alter() {
    let mut db = TestDb::new("f_native").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v VARCHAR(10) NOT NULL)")
        .await;
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    db.exec("CREATE TABLE t_zdm_prb LIKE t").await;
    db.exec("ALTER TABLE t_zdm_prb ADD COLUMN n INT NOT NULL DEFAULT 7")
        .await;
    let spec = zdm_ost::ddl::parse_alter("ADD COLUMN n INT NOT NULL DEFAULT 7", "t").unwrap();
    let cols = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (key, stored) = (cols(&["id"]), cols(&["id", "v"]));
    let mut conn = Conn::new(opts(primary_port(), "root", None, None))
        .await
        .unwrap();
    let ok = zdm_ost::native_check::check(
        &mut conn,
        &db.name,
        "t",
        "t_zdm_prb",
        &spec,
        &format!(
            "INSERT INTO `{}`.t_zdm_prb (id, v) SELECT id, v FROM {{source}}",
            db.name
        ),
        &key,
        &key,
        &stored,
    )
    .await
    .unwrap();
    assert_eq!((ok.rows, ok.exact.len()), (2, 3));
    let wrong = zdm_ost::native_check::check(
        &mut conn,
        &db.name,
        "t",
        "t_zdm_prb",
        &spec,
        &format!(
            "INSERT INTO `{}`.t_zdm_prb (id, v, n) SELECT id, UPPER(v), 8 FROM {{source}}",
            db.name
        ),
        &key,
        &key,
        &stored,
    )
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        wrong,
        "on a sample of 2 rows, the server's own ALTER gives other values than zdm-ost's copy in `v`, `n` \
         (first at id='1', `v` zdm-ost 'A', native 'a', `n` zdm-ost '8', native '7'). zdm-ost cannot \
         reproduce this change: run it as a native ALTER instead"
    );
    assert_eq!(
        rows(&mut db.conn, "SELECT * FROM t ORDER BY id")
            .await
            .len(),
        2
    );
    db.drop_db().await;
}
