//! The ALTER text read as the server reads it: `IF EXISTS`, a column named like a table option,
//! the `AUTO_INCREMENT` option; and tables whose copy would lose what the server keeps.

mod common;

use common::fixtures::*;
use common::*;
use mysql_async::prelude::*;

async fn migrate(db: &str, alter: &str) -> std::process::Output {
    zdm(
        db,
        &[
            "--table",
            "t",
            "--alter",
            alter,
            "--execute",
            "--no-attempt-instant-ddl",
            "--ok-to-drop-table",
        ],
    )
    .await
}

#[tokio::test]
async fn change_column_if_exists_of_a_missing_column_keeps_every_value() {
    let mut db = TestDb::new("a_ifexists").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, full_name VARCHAR(50) NOT NULL)")
        .await;
    db.exec("INSERT INTO t SELECT seq, CONCAT('name ', seq) FROM seq_1_to_500")
        .await;
    let before = rows(&mut db.conn, "SELECT id, full_name FROM t ORDER BY id").await;
    // an idempotent migration script, run a second time: `name` was renamed already
    for alter in [
        "CHANGE COLUMN IF EXISTS name full_name VARCHAR(100) NOT NULL",
        "RENAME COLUMN IF EXISTS gone TO id, ADD COLUMN note INT NULL",
    ] {
        let o = migrate(&db.name, alter).await;
        assert!(o.status.success(), "{alter}: {}", stderr(&o));
        assert_eq!(
            rows(&mut db.conn, "SELECT id, full_name FROM t ORDER BY id").await,
            before,
            "{alter}"
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn a_column_named_engine_and_the_alters_auto_increment_are_what_the_server_makes_them() {
    let mut db = TestDb::new("a_engine").await;
    db.exec("CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    db.exec("INSERT INTO t (v) SELECT seq FROM seq_1_to_1000")
        .await;
    let o = migrate(
        &db.name,
        "ADD COLUMN engine VARCHAR(20) NULL, AUTO_INCREMENT = 1000000",
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    db.exec("INSERT INTO t (v, engine) VALUES (1, 'x')").await;
    let id: Option<i64> = db.conn.query_first("SELECT MAX(id) FROM t").await.unwrap();
    assert_eq!(
        id,
        Some(1_000_000),
        "the next id after AUTO_INCREMENT = 1000000"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_system_versioned_table_is_refused_before_anything_is_created() {
    let mut db = TestDb::new("a_versioned").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT) WITH SYSTEM VERSIONING")
        .await;
    db.exec("INSERT INTO t VALUES (1, 1)").await;
    db.exec("UPDATE t SET v = 2").await;
    let o = migrate(&db.name, "ADD COLUMN note INT NULL").await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_line(&stderr(&o)),
        format!(
            "zdm-ost: error: preflight: `{}`.`t` is system-versioned: a copy would lose its history rows and reset \
             their row_start/row_end (system_versioning_alter_history=KEEP does not carry them either). Change it \
             with a native ALTER",
            db.name
        )
    );
    assert_eq!(db.tables().await, ["t"]);
    db.drop_db().await;
}

#[tokio::test]
async fn double_to_float_is_copied_and_proven_like_a_native_alter() {
    let mut db = TestDb::new("a_float").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, d DOUBLE NOT NULL)")
        .await;
    db.exec("INSERT INTO t SELECT seq, seq * 1.000001 + 0.1 FROM seq_1_to_3000")
        .await;
    db.exec("CREATE TABLE n LIKE t").await;
    db.exec("INSERT INTO n SELECT * FROM t").await;
    db.exec("ALTER TABLE n MODIFY d FLOAT NOT NULL").await;
    let o = migrate(&db.name, "MODIFY d FLOAT NOT NULL").await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("checksum: original and ghost equal"),
        "{}",
        stderr(&o)
    );
    assert_same_rows(
        &mut db.conn,
        "SELECT id, HEX(CONCAT(d)) FROM t ORDER BY id",
        "SELECT id, HEX(CONCAT(d)) FROM n ORDER BY id",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn columns_of_different_charsets_and_a_long_unique_index_migrate_like_a_native_alter() {
    let mut db = TestDb::new("a_charsets").await;
    db.exec(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a VARCHAR(10) CHARACTER SET utf8mb4, \
         b VARCHAR(10) CHARACTER SET utf16, c VARCHAR(10) CHARACTER SET latin1, \
         d VARCHAR(10) CHARACTER SET cp1251, k VARCHAR(1000) CHARACTER SET utf8mb4 NULL, UNIQUE KEY uk (k))",
    )
    .await;
    db.exec(
        "INSERT INTO t SELECT seq, CONCAT('ä', seq), CONCAT('€', seq), CONCAT('é', seq), \
         CONVERT(CONCAT('ж', seq) USING cp1251), REPEAT(CONCAT('k', seq), 100) FROM seq_1_to_300",
    )
    .await;
    let hash: Option<String> = db
        .conn
        .query_first("SELECT INDEX_TYPE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' AND INDEX_NAME = 'uk'")
        .await
        .unwrap();
    assert_eq!(
        hash.as_deref(),
        Some("HASH"),
        "a long UNIQUE index is a hash index"
    );
    db.exec("CREATE TABLE ctl LIKE t").await;
    db.exec("INSERT INTO ctl SELECT * FROM t").await;
    let (run, flag) = common::run::postponed(
        primary_port(),
        &db.name,
        "charsets",
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note INT NULL",
            "--execute",
        ],
    )
    .await;
    for t in ["t", "ctl"] {
        db.exec(&format!(
            "UPDATE {t} SET b = CONCAT(b, 'x'), k = CONCAT(k, 'y') WHERE id % 3 = 0"
        ))
        .await;
    }
    std::fs::remove_file(&flag).unwrap();
    let (code, _, err) = run.finish().await;
    assert_eq!(code, Some(0), "{err}");
    assert_same_rows(
        &mut db.conn,
        "SELECT id, HEX(a), HEX(b), HEX(c), HEX(d), HEX(k) FROM t ORDER BY id",
        "SELECT id, HEX(a), HEX(b), HEX(c), HEX(d), HEX(k) FROM ctl ORDER BY id",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn discard_foreign_keys_migrates_a_child_table_without_them_and_still_refuses_a_parent() {
    let mut db = TestDb::new("a_discardfk").await;
    db.exec("CREATE TABLE p (id INT NOT NULL PRIMARY KEY)")
        .await;
    db.exec("INSERT INTO p SELECT seq FROM seq_1_to_10").await;
    db.exec(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, pid INT NOT NULL, \
         CONSTRAINT t_fk FOREIGN KEY (pid) REFERENCES p (id))",
    )
    .await;
    db.exec("INSERT INTO t SELECT seq, 1 + seq % 10 FROM seq_1_to_300")
        .await;
    let before = rows(&mut db.conn, "SELECT id, pid FROM t ORDER BY id").await;
    let o = zdm(
        &db.name,
        &[
            "--table",
            "t",
            "--alter",
            "ADD COLUMN note INT NULL",
            "--execute",
            "--discard-foreign-keys",
            "--no-attempt-instant-ddl",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        rows(&mut db.conn, "SELECT id, pid FROM t ORDER BY id").await,
        before
    );
    let fks: Vec<String> = db
        .conn
        .query("SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = 't'")
        .await
        .unwrap();
    assert!(fks.is_empty(), "the new table kept {fks:?}");
    // a table other tables reference stays refused
    let o = zdm(
        &db.name,
        &[
            "--table",
            "p",
            "--alter",
            "ADD COLUMN note INT NULL",
            "--discard-foreign-keys",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_line(&stderr(&o)),
        format!(
            "zdm-ost: error: preflight: `{0}`.`p` is referenced by other tables' foreign keys (t_fk: `{0}`.`t_zdm_old` -> `{0}`.`p`): \
             parent-side foreign keys are not supported, even with --discard-foreign-keys (the children would keep pointing \
             at the old table). Drop them first, or change the table natively",
            db.name
        )
    );
    db.drop_db().await;
}

/// Temporal columns in the pre-10.1 format (a server with mysql56_temporal_format=OFF made
/// them) are refused at preflight: their binlog images cannot be decoded. On a server of its
/// own, since the format is a global setting.
#[tokio::test]
async fn temporal_columns_in_the_old_format_are_refused_with_the_fix() {
    let port = 3321;
    let mut c = instance_db("zt_oldtime", port, &["--mysql56-temporal-format=OFF"]).await;
    c.query_drop(
        "CREATE TABLE zt_oldtime.t (tm TIME(3) NOT NULL, id INT NOT NULL PRIMARY KEY, v INT)",
    )
    .await
    .unwrap();
    let o = zdm_raw(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--database",
        "zt_oldtime",
        "--table",
        "t",
        "--alter",
        "ADD COLUMN note INT NULL",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_line(&stderr(&o)),
        "zdm-ost: error: preflight: `zt_oldtime`.`t` has column(s) `tm` in the pre-10.1 temporal format (COLUMN_TYPE says \
         /* mariadb-5.3 */), whose binlog images zdm-ost cannot decode. Upgrade them first with a native ALTER TABLE ... \
         FORCE (with mysql56_temporal_format=ON)"
    );
}

/// A resync whose INSERT fails (the new schema rejects a value) leaves no transaction open on
/// its connection: its DELETE's row locks would otherwise stay until the connection's next use.
#[tokio::test]
async fn a_failed_resync_leaves_no_transaction_open() {
    use zdm_ost::key::{range_predicate, KeyColumn};
    use zdm_ost::resync::{resync, Mode, Selection, Tables};
    let mut db = TestDb::new("a_opentrx").await;
    db.exec("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v VARCHAR(20) NOT NULL)")
        .await;
    db.exec("CREATE TABLE g (id INT NOT NULL PRIMARY KEY, v VARCHAR(2) NOT NULL)")
        .await;
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'too long for g')")
        .await;
    db.exec("INSERT INTO g VALUES (1, 'a'), (2, 'b')").await;
    let key = vec![KeyColumn::new("id", 0, "int(11)", None, None)];
    let tables = Tables {
        db: db.name.clone(),
        orig: "t".into(),
        ghost: "g".into(),
        key_orig: key.clone(),
        key_ghost: key.clone(),
        key_index: "PRIMARY".into(),
        ghost_index: "PRIMARY".into(),
        targets: vec!["id".into(), "v".into()],
        sources: vec!["id".into(), "v".into()],
        fills: Vec::new(),
        shared_unique: Vec::new(),
        share_nowait: "LOCK IN SHARE MODE NOWAIT",
        insert_slot: None,
    };
    let endpoint = zdm_ost::conn::Endpoint {
        host: "127.0.0.1".into(),
        port: primary_port(),
        user: "root".into(),
        password: None,
    };
    let mut conn = endpoint.connect_read_committed().await.unwrap();
    let id: u64 = conn
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    let (ghost_pred, ghost_params) = range_predicate(&key, None, None);
    let (orig_pred, orig_params) = range_predicate(&key, None, None);
    let sel = Selection {
        ghost_pred,
        ghost_params,
        orig_pred,
        orig_params,
        evict: Vec::new(),
    };
    let e = resync(&mut conn, &tables, sel, Mode::Locking)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Data too long"), "{e}");
    let open: u64 = db
        .conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?",
            (id,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open, 0, "the failed resync left its transaction open");
    // and the ghost's rows are as they were: the DELETE was rolled back
    assert_eq!(
        rows(&mut db.conn, "SELECT id FROM g ORDER BY id")
            .await
            .len(),
        2
    );
    db.drop_db().await;
}
