//! Preflight and dry-run behaviour against the real MariaDB primary and replica: every refusal
//! produced for real, with its exact text; classification; column mapping; and a dry run that
//! leaves schema and data byte-identical.

mod common;

use common::fixtures::rows;
use common::*;
use mysql_async::prelude::*;

const ALTER: &str = "ADD COLUMN note TEXT NULL";

async fn orders(test: &str) -> TestDb {
    let mut db = TestDb::new(test).await;
    db.exec(
        "CREATE TABLE orders (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         customer VARCHAR(64) NOT NULL, qty INT NOT NULL, created DATETIME(6) NOT NULL, KEY (customer))",
    )
    .await;
    db.exec(
        "INSERT INTO orders (customer, qty, created) \
         SELECT CONCAT('customer-', seq), seq % 17, '2026-01-01 00:00:00.123456' FROM seq_1_to_3000",
    )
    .await;
    db
}

#[tokio::test]
async fn dry_run_leaves_schema_and_data_byte_identical() {
    let mut db = orders("dry_run_identical").await;
    db.exec("CREATE TABLE other (id INT PRIMARY KEY, v VARCHAR(10))")
        .await;
    db.exec("INSERT INTO other VALUES (1, 'a'), (2, NULL)")
        .await;
    let before = db.snapshot().await;
    for alter in [
        ALTER,
        "MODIFY qty BIGINT NOT NULL",
        "ADD INDEX (qty)",
        "CHANGE customer customer_name VARCHAR(80) NOT NULL",
    ] {
        let o = zdm(&db.name, &["--table", "orders", "--alter", alter]).await;
        assert!(o.status.success(), "{alter}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("dry run: nothing was changed"),
            "{}",
            stdout(&o)
        );
    }
    let after = db.snapshot().await;
    assert_eq!(before.len(), after.len(), "tables were added or removed");
    assert_eq!(before, after);
    assert_eq!(
        db.tables().await,
        vec!["orders".to_string(), "other".to_string()]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn classification_of_add_column_add_index_and_type_change() {
    let db = orders("classify").await;
    let class = |alter: &'static str| {
        let name = db.name.clone();
        async move {
            let o = zdm(&name, &["--table", "orders", "--alter", alter, "--json"]).await;
            assert!(o.status.success(), "{alter}: {}", stderr(&o));
            json(&o)["plan"]["algorithm"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(class("ADD COLUMN note TEXT NULL").await, "INSTANT");
    assert_eq!(class("ADD INDEX idx_qty (qty)").await, "INPLACE");
    assert_eq!(class("MODIFY qty VARCHAR(20) NOT NULL").await, "COPY");
    db.drop_db().await;
}

#[tokio::test]
async fn column_mapping_follows_change_and_rename_column() {
    let db = orders("mapping").await;
    let o = zdm(
        &db.name,
        &[
            "--table",
            "orders",
            "--json",
            "--alter",
            "CHANGE customer customer_name VARCHAR(80) NOT NULL, RENAME COLUMN qty TO quantity, DROP COLUMN created, ADD COLUMN note TEXT",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = &json(&o)["plan"];
    let mapping: Vec<(String, Option<String>)> = plan["mapping"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["target"].as_str().unwrap().to_string(),
                m["source"].as_str().map(String::from),
            )
        })
        .collect();
    assert_eq!(
        mapping,
        vec![
            ("id".to_string(), Some("id".to_string())),
            ("customer_name".to_string(), Some("customer".to_string())),
            ("quantity".to_string(), Some("qty".to_string())),
            ("note".to_string(), None),
        ]
    );
    assert_eq!(plan["dropped_columns"], serde_json::json!(["created"]));
    assert_eq!(plan["chunk_key"]["columns"], serde_json::json!(["id"]));
    assert!(plan["estimate"]["sample_rows"].as_u64().unwrap() > 0);
    db.drop_db().await;
}

#[tokio::test]
async fn missing_database_and_table_are_named() {
    let db = orders("missing").await;
    let o = zdm("zt_no_such_db", &["--table", "orders", "--alter", ALTER]).await;
    assert_error(
        &o,
        &format!(
            "preflight: database `zt_no_such_db` does not exist on 127.0.0.1:{}: check --database",
            primary_port()
        ),
    );
    let o = zdm(&db.name, &["--table", "nope", "--alter", ALTER]).await;
    assert_error(
        &o,
        &format!(
            "preflight: table `{}`.`nope` does not exist on 127.0.0.1:{}: check --database and --table",
            db.name,
            primary_port()
        ),
    );
    db.drop_db().await;
}

#[tokio::test]
async fn views_non_innodb_and_keyless_tables_are_refused() {
    let mut db = orders("refusals").await;
    db.exec("CREATE VIEW v AS SELECT * FROM orders").await;
    db.exec("CREATE TABLE my (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await;
    db.exec("CREATE TABLE nokey (a INT, b INT)").await;
    db.exec("CREATE TABLE nullunique (a INT NULL, UNIQUE KEY (a))")
        .await;
    let n = db.name.clone();
    assert_error(
        &zdm(&n, &["--table", "v", "--alter", ALTER]).await,
        &format!("preflight: `{n}`.`v` is a view, not a table: alter the table(s) it reads from"),
    );
    assert_error(
        &zdm(&n, &["--table", "my", "--alter", ALTER]).await,
        &format!("preflight: `{n}`.`my` uses the MyISAM engine; zdm-ost migrates InnoDB tables only (it needs row locks and transactions). Convert it first, e.g. ALTER TABLE ... ENGINE=InnoDB, natively"),
    );
    for t in ["nokey", "nullunique"] {
        assert_error(
            &zdm(&n, &["--table", t, "--alter", ALTER]).await,
            &format!("preflight: `{n}`.`{t}` has no primary key and no unique key over NOT NULL columns, so zdm-ost cannot copy it in chunks or follow its rows. Add a primary key first"),
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn foreign_keys_in_either_direction_and_triggers_are_refused() {
    let mut db = orders("fk_trig").await;
    db.exec("CREATE TABLE parent (id INT PRIMARY KEY)").await;
    db.exec("CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, CONSTRAINT fk_child FOREIGN KEY (parent_id) REFERENCES parent (id))").await;
    db.exec("CREATE TABLE audited (id INT PRIMARY KEY, v INT)")
        .await;
    db.exec("CREATE TRIGGER audited_ins BEFORE INSERT ON audited FOR EACH ROW SET NEW.v = 1")
        .await;
    let n = db.name.clone();
    let fk = format!("fk_child: `{n}`.`child` -> `{n}`.`parent`");
    let refused = |t: &str| {
        format!("preflight: `{n}`.`{t}` takes part in foreign keys ({fk}). zdm-ost copies into a new table and renames it: child tables would keep pointing at the old table, and the new table's constraints would be checked against the wrong rows. Drop the foreign keys first, or change the table natively")
    };
    for t in ["child", "parent"] {
        assert_error(
            &zdm(&n, &["--table", t, "--alter", ALTER]).await,
            &refused(t),
        );
    }
    // without PROCESS InnoDB's dictionary cannot be read: the referencing key is still found
    // (through information_schema), and named the same way
    db.create_user("zt_fk", "ALL PRIVILEGES").await;
    let o = zdm_as("zt_fk", &n, &["--table", "parent", "--alter", ALTER]).await;
    assert_error(&o, &refused("parent"));
    db.exec("DROP USER 'zt_fk'@'127.0.0.1'").await;
    // a table that references itself is listed once
    db.exec("CREATE TABLE tree (id INT PRIMARY KEY, up INT, CONSTRAINT fk_up FOREIGN KEY (up) REFERENCES tree (id))").await;
    assert_error(
        &zdm(&n, &["--table", "tree", "--alter", ALTER]).await,
        &format!("preflight: `{n}`.`tree` takes part in foreign keys (fk_up: `{n}`.`tree` -> `{n}`.`tree`). zdm-ost copies into a new table and renames it: child tables would keep pointing at the old table, and the new table's constraints would be checked against the wrong rows. Drop the foreign keys first, or change the table natively"),
    );
    assert_error(
        &zdm(&n, &["--table", "audited", "--alter", ALTER]).await,
        &format!("preflight: `{n}`.`audited` has triggers (audited_ins). Triggers stay with the old table at the rename and would be lost, and they may write to other tables while rows are copied. Drop them first (and recreate them after), or change the table natively"),
    );
    db.drop_db().await;
}

#[tokio::test]
async fn leftover_ghost_and_old_tables_are_refused() {
    let mut db = orders("leftovers").await;
    let n = db.name.clone();
    db.exec("CREATE TABLE orders_zdm_gho (id INT PRIMARY KEY)")
        .await;
    assert_error(
        &zdm(&n, &["--table", "orders", "--alter", ALTER]).await,
        &format!("preflight: table `{n}`.`orders_zdm_gho` already exists: it is left over from an earlier zdm-ost run on `{n}`.`orders`, or one is running now. If none is running, rerun with --initially-drop-ghost-table (or DROP TABLE `{n}`.`orders_zdm_gho`)"),
    );
    db.exec("DROP TABLE orders_zdm_gho").await;
    db.exec("CREATE TABLE orders_zdm_old (id INT PRIMARY KEY)")
        .await;
    assert_error(
        &zdm(&n, &["--table", "orders", "--alter", ALTER]).await,
        &format!("preflight: table `{n}`.`orders_zdm_old` already exists: it is the old table kept by an earlier migration of `{n}`.`orders`. Once you no longer need it, DROP TABLE `{n}`.`orders_zdm_old` (or rename it) and run again"),
    );
    db.drop_db().await;
}

#[tokio::test]
async fn missing_privileges_are_listed_with_the_grant_that_fixes_them() {
    let mut db = orders("privs").await;
    let n = db.name.clone();
    db.create_user("zt_privs", "SELECT, INSERT, UPDATE, DELETE")
        .await;
    let o = zdm_as("zt_privs", &n, &["--table", "orders", "--alter", ALTER]).await;
    assert_error(
        &o,
        &format!("preflight: user 'zt_privs'@'127.0.0.1' lacks privileges zdm-ost needs: CREATE on `{n}`, DROP on `{n}`, ALTER on `{n}`, INDEX on `{n}`, LOCK TABLES on `{n}`, REPLICATION SLAVE (global), REPLICATION CLIENT (global). Grant them, e.g.: GRANT CREATE, DROP, ALTER, INDEX, LOCK TABLES ON `{n}`.* TO 'zt_privs'@'127.0.0.1'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'zt_privs'@'127.0.0.1'"),
    );
    // the password never shows up in what zdm-ost prints
    assert!(!stderr(&o).contains("pw'") && !stdout(&o).contains("pw"));
    db.exec("DROP USER 'zt_privs'@'127.0.0.1'").await;
    db.drop_db().await;
}

/// Privileges that come through a default role (information_schema shows none of them) or a
/// wildcard database grant are enough: the run is not refused, and the migration goes through
/// on that user's own sessions.
#[tokio::test]
async fn privileges_through_a_role_or_a_wildcard_database_grant_are_enough() {
    let mut db = orders("privs_role").await;
    let n = db.name.clone();
    let before = rows(&mut db.conn, "SELECT * FROM orders ORDER BY id").await;
    let needed = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, LOCK TABLES";
    db.exec("DROP ROLE IF EXISTS zt_migrator").await;
    db.exec("CREATE ROLE zt_migrator").await;
    db.exec(&format!("GRANT {needed} ON `{n}`.* TO zt_migrator"))
        .await;
    db.exec("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO zt_migrator")
        .await;
    db.create_user("zt_role", "USAGE").await;
    db.exec("GRANT zt_migrator TO 'zt_role'@'127.0.0.1'").await;
    db.exec("SET DEFAULT ROLE zt_migrator FOR 'zt_role'@'127.0.0.1'")
        .await;
    // a pattern that matches this test's database and others: `zt_privs\_role%`
    db.create_user("zt_wild", "USAGE").await;
    let pattern = format!("{}%", n.replace('_', "\\_"));
    db.exec(&format!(
        "GRANT {needed} ON `{pattern}`.* TO 'zt_wild'@'127.0.0.1'"
    ))
    .await;
    db.exec("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'zt_wild'@'127.0.0.1'")
        .await;
    for (user, alter, column) in [
        ("zt_role", "ADD COLUMN via_role INT NULL", "via_role"),
        ("zt_wild", "ADD COLUMN via_wild INT NULL", "via_wild"),
    ] {
        let o = zdm_as(
            user,
            &n,
            &[
                "--table",
                "orders",
                "--alter",
                alter,
                "--no-attempt-instant-ddl",
                "--execute",
                "--ok-to-drop-table",
            ],
        )
        .await;
        assert!(o.status.success(), "{user}: {}", stderr(&o));
        let has: Option<String> = db
            .conn
            .exec_first(
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = 'orders' AND column_name = ?",
                (&n, column),
            )
            .await
            .unwrap();
        assert_eq!(has.as_deref(), Some(column), "{user}");
    }
    // the two added columns are NULL everywhere; the rest is what it was
    let after = rows(
        &mut db.conn,
        "SELECT id, customer, qty, created FROM orders WHERE via_role IS NULL AND via_wild IS NULL ORDER BY id",
    )
    .await;
    assert_eq!(before, after);
    db.exec("DROP USER 'zt_role'@'127.0.0.1', 'zt_wild'@'127.0.0.1'")
        .await;
    db.exec("DROP ROLE zt_migrator").await;
    db.drop_db().await;
}

/// A new NOT NULL column without a DEFAULT whose type has no value an INSERT can write (a
/// POINT; JSON, whose CHECK rejects the empty string, as the native ALTER's does) stops at the
/// plan's sample copy, with `--execute`, and the table is left as it was.
#[tokio::test]
async fn new_not_null_columns_no_insert_can_fill_stop_at_the_plan() {
    let mut db = orders("notnull_unfillable").await;
    let n = db.name.clone();
    let before = db.snapshot().await;
    let run = |alter: &'static str| {
        let n = n.clone();
        async move {
            zdm(
                &n,
                &[
                    "--table",
                    "orders",
                    "--alter",
                    alter,
                    "--no-attempt-instant-ddl",
                    "--execute",
                ],
            )
            .await
        }
    };
    assert_error(
        &run("ADD COLUMN g POINT NOT NULL").await,
        "plan: copying a sample of rows into a copy of the table with the new schema failed: Field 'g' doesn't have a default value (error 1364). The migration would fail the same way: fix the data or the ALTER first",
    );
    assert_error(
        &run("ADD COLUMN j JSON NOT NULL").await,
        &format!("plan: copying a sample of rows into a copy of the table with the new schema failed: CONSTRAINT `orders_zdm_prb.j` failed for `{n}`.`orders_zdm_prb` (error 4025). The migration would fail the same way: fix the data or the ALTER first"),
    );
    assert_eq!(db.snapshot().await, before);
    assert_eq!(db.tables().await, vec!["orders".to_string()]);
    db.drop_db().await;
}

#[tokio::test]
async fn alters_that_cannot_be_done_online_are_refused_with_the_reason() {
    let mut db = orders("bad_alter").await;
    db.exec("CREATE TABLE plain (id INT NOT NULL PRIMARY KEY, b INT NOT NULL, c INT NULL, UNIQUE KEY uc (c))").await;
    let n = db.name.clone();
    let run = |t: &'static str, alter: &'static str| {
        let n = n.clone();
        async move { zdm(&n, &["--table", t, "--alter", alter]).await }
    };
    assert_error(
        &run("orders", "RENAME TO orders2").await,
        "invalid --alter: `RENAME TO orders2` renames the table, which is not a change zdm-ost copies a table for: use RENAME TABLE directly (it is atomic and instant)",
    );
    assert_error(
        &run("orders", "PARTITION BY HASH(id) PARTITIONS 4").await,
        "invalid --alter: partition clauses are not supported yet (`PARTITION BY HASH(id) PARTITIONS 4`): run partition maintenance natively (most of it is online), or repartition in a separate change",
    );
    assert_error(
        &run("orders", "ADD COLUMN x INT NOT NULL DEFAULT 'abc'").await,
        "plan: the server rejects the ALTER on an empty copy of the table: Invalid default value for 'x' (error 1067). Fix --alter",
    );
    assert_error(
        &run("orders", "ADD COLUMN").await,
        "plan: the server rejects the ALTER on an empty copy of the table: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '' at line 1 (error 1064). Fix --alter",
    );
    assert_error(
        &run("plain", "DROP PRIMARY KEY").await,
        "plan: after the ALTER, the new table shares no primary key or unique key over NOT NULL columns with `plain` (original keys: PRIMARY(id); new keys: none). zdm-ost identifies rows by a key both tables have: keep the primary key, or keep a unique key over NOT NULL columns",
    );
    // a new key that extends the old one: the old key still names one row in both tables
    // (gh-ost's shared-uk), and the new key's prefix finds it
    let o = run("plain", "DROP PRIMARY KEY, ADD PRIMARY KEY (id, b)").await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("copy rows in chunks of PRIMARY ranges (id)"),
        "{}",
        stdout(&o)
    );
    assert_error(
        &run("plain", "DROP PRIMARY KEY, ADD PRIMARY KEY (b, id)").await,
        "plan: after the ALTER, the new table shares no primary key or unique key over NOT NULL columns with `plain` (original keys: PRIMARY(id); new keys: PRIMARY(b,id)). zdm-ost identifies rows by a key both tables have: keep the primary key, or keep a unique key over NOT NULL columns",
    );
    // a new primary key is fine while another key both tables share remains
    db.exec("ALTER TABLE plain MODIFY c INT NOT NULL").await;
    let o = run("plain", "DROP PRIMARY KEY, ADD PRIMARY KEY (id, b)").await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("chunk key:    uc (c)"),
        "{}",
        stdout(&o)
    );
    // data the new schema cannot hold fails the dry run, before any migration
    assert_error(
        &run("orders", "MODIFY customer VARCHAR(5) NOT NULL").await,
        "plan: copying a sample of rows into a copy of the table with the new schema failed: Data too long for column 'customer' at row 1 (error 1406). The migration would fail the same way: fix the data or the ALTER first",
    );
    assert_eq!(
        db.tables().await,
        vec!["orders".to_string(), "plain".to_string()]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn table_names_too_long_for_helpers_are_refused() {
    let mut db = orders("long_name").await;
    let long = "t".repeat(60);
    db.exec(&format!("CREATE TABLE {long} (id INT PRIMARY KEY)"))
        .await;
    assert_error(
        &zdm(&db.name, &["--table", &long, "--alter", ALTER]).await,
        &format!("invalid --alter: table name `{long}` is too long: the helper table `{long}_zdm_gho` would have 68 characters, over MySQL's limit of 64. Rename the table first, or migrate natively"),
    );
    db.drop_db().await;
}

#[tokio::test]
async fn unreachable_server_and_wrong_password_get_clear_errors() {
    let o = zdm_raw(&[
        "--port",
        "1",
        "--database",
        "x",
        "--table",
        "t",
        "--alter",
        ALTER,
    ])
    .await;
    assert_error(
        &o,
        "cannot connect to 127.0.0.1:1: Connection refused (os error 111). Check --host/--port and that the server is running and reachable from here",
    );
    let o = zdm_raw(&[
        "--port",
        &primary_port().to_string(),
        "--user",
        "zdm",
        "--password",
        "not-the-password",
        "--database",
        "x",
        "--table",
        "t",
        "--alter",
        ALTER,
    ])
    .await;
    assert_error(
        &o,
        &format!("access denied for user 'zdm' at 127.0.0.1:{}: Access denied for user 'zdm'@'127.0.0.1' (using password: YES) (error 1045). Check --user and --password (or ZDM_PASSWORD)", primary_port()),
    );
    assert!(!stderr(&o).contains("not-the-password"));
}

#[tokio::test]
async fn long_transactions_and_replica_lag_are_reported_without_failing() {
    let db = orders("reports").await;
    let mut holder = connect(primary_port()).await;
    holder.query_drop("START TRANSACTION").await.unwrap();
    holder
        .query_drop(format!(
            "UPDATE `{}`.orders SET qty = qty + 1 WHERE id = 1",
            db.name
        ))
        .await
        .unwrap();
    let holder_id = holder.id();
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    let o = zdm(
        &db.name,
        &[
            "--table",
            "orders",
            "--alter",
            ALTER,
            "--json",
            "--replica",
            &format!("127.0.0.1:{}", replica_port()),
            "--replica",
            "127.0.0.1:1",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = json(&o)["plan"].clone();
    let trx = plan["long_transactions"].as_array().unwrap();
    let mine = trx
        .iter()
        .find(|t| t["id"].as_u64() == Some(holder_id as u64))
        .unwrap_or_else(|| panic!("transaction {holder_id} not reported: {trx:?}"));
    assert!(mine["seconds"].as_u64().unwrap() >= 10);
    assert_eq!(mine["user"], "root");
    let replicas = plan["replicas"].as_array().unwrap();
    assert_eq!(replicas[0]["io_running"], "Yes");
    assert_eq!(replicas[0]["sql_running"], "Yes");
    assert!(replicas[0]["lag_seconds"].as_u64().is_some());
    assert_eq!(replicas[0]["problem"], serde_json::Value::Null);
    assert_eq!(
        replicas[1]["problem"],
        "cannot connect to 127.0.0.1:1: Connection refused (os error 111). Check --host/--port and that the server is running and reachable from here"
    );
    // the text report says the same
    let text = zdm(&db.name, &["--table", "orders", "--alter", ALTER]).await;
    assert!(
        stdout(&text).contains(&format!("id {holder_id} user root open ")),
        "{}",
        stdout(&text)
    );
    holder.query_drop("ROLLBACK").await.unwrap();
    db.drop_db().await;
}

/// Pointed at the test replica by mistake, zdm-ost refuses: the change would stay on the
/// replica and the primary's next writes would replicate into a table of another shape. As root
/// the refusal names the primary (`SHOW SLAVE STATUS`); as a user without SLAVE MONITOR it
/// says `Slaves_running`. `--allow-on-replica` lets a dry run through.
#[tokio::test]
async fn a_replica_is_refused_unless_allowed() {
    let mut db = orders("on_replica").await;
    let n = db.name.clone();
    db.create_user("zt_onreplica", "ALL PRIVILEGES").await;
    db.exec("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'zt_onreplica'@'127.0.0.1'")
        .await;
    // everything above reaches the replica before this marker does
    db.exec("CREATE TABLE replicated_marker (id INT PRIMARY KEY)")
        .await;
    let mut replica = connect(replica_port()).await;
    let mut seen = false;
    for _ in 0..100 {
        let found: Option<u64> = replica
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'replicated_marker'",
                (&n,),
            )
            .await
            .unwrap();
        if found == Some(1) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the test database did not reach the replica");
    let _ = replica.disconnect().await;
    let rp = replica_port().to_string();
    let on_replica = |extra: &'static [&'static str]| {
        let (rp, n) = (rp.clone(), n.clone());
        async move {
            let mut args = vec![
                "--host",
                "127.0.0.1",
                "--port",
                &rp,
                "--database",
                &n,
                "--table",
                "orders",
                "--alter",
                ALTER,
            ];
            args.extend_from_slice(extra);
            zdm_raw(&args).await
        }
    };
    let tail = "a change made there does not reach the primary, and the primary's next writes to the table would replicate into a table of another shape. Point --host at the primary, or pass --allow-on-replica to change this server alone";
    assert_error(
        &on_replica(&["--execute"]).await,
        &format!(
            "preflight: 127.0.0.1:{rp} is a replica (it replicates from 127.0.0.1:{}): {tail}",
            primary_port()
        ),
    );
    assert_error(
        &on_replica(&["--user", "zt_onreplica", "--password", "pw"]).await,
        &format!("preflight: 127.0.0.1:{rp} is a replica (Slaves_running=1): {tail}"),
    );
    let o = on_replica(&["--allow-on-replica"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dry run: nothing was changed"));
    db.exec("DROP USER 'zt_onreplica'@'127.0.0.1'").await;
    db.drop_db().await;
}

/// Binlog settings (and read_only) are global, so these run on servers of their own (started through the
/// test-bed script), never on the shared primary.
#[tokio::test]
async fn wrong_binlog_settings_are_refused_naming_variable_value_and_fix() {
    start_instance("zt_binlog", 3313, &[]);
    start_instance("zt_nobinlog", 3314, &["--skip-log-bin"]);
    let mut c = connect(3313).await;
    c.query_drop(
        "SET GLOBAL binlog_format = 'ROW', binlog_row_image = 'FULL', log_bin_compress = OFF",
    )
    .await
    .unwrap();
    let run = |port: u16| async move {
        zdm_raw(&[
            "--port",
            &port.to_string(),
            "--database",
            "mysql",
            "--table",
            "user",
            "--alter",
            ALTER,
        ])
        .await
    };
    // a read-only server (a replica, a demoted primary) is refused before anything else
    c.query_drop("SET GLOBAL read_only = ON").await.unwrap();
    assert_error(
        &run(3313).await,
        "preflight: 127.0.0.1:3313 is read-only (read_only=ON), as a replica or a demoted primary is: point --host at the writable primary, or pass --allow-on-replica to change this server alone",
    );
    c.query_drop("SET GLOBAL read_only = OFF").await.unwrap();
    c.query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    assert_error(
        &run(3313).await,
        "preflight: binlog_format is STATEMENT on 127.0.0.1:3313, zdm-ost needs ROW. Fix: SET GLOBAL binlog_format = 'ROW' (and set it in the server's config); sessions opened before the change keep their old value, so restart long-lived application connections",
    );
    c.query_drop("SET GLOBAL binlog_format = 'ROW', binlog_row_image = 'MINIMAL'")
        .await
        .unwrap();
    assert_error(
        &run(3313).await,
        "preflight: binlog_row_image is MINIMAL on 127.0.0.1:3313, zdm-ost needs FULL. Fix: SET GLOBAL binlog_row_image = 'FULL' (and set it in the server's config); sessions opened before the change keep their old value, so restart long-lived application connections",
    );
    c.query_drop("SET GLOBAL binlog_row_image = 'FULL', log_bin_compress = ON")
        .await
        .unwrap();
    assert_error(
        &run(3313).await,
        "preflight: log_bin_compress is ON on 127.0.0.1:3313, zdm-ost needs OFF. Fix: SET GLOBAL log_bin_compress = OFF (compressed row events cannot be decoded safely)",
    );
    c.query_drop("SET GLOBAL log_bin_compress = OFF")
        .await
        .unwrap();
    // with everything right, the checks pass and the next one (the table) speaks
    let o = run(3313).await;
    assert_error(
        &o,
        "preflight: `mysql`.`user` is a view, not a table: alter the table(s) it reads from",
    );
    assert_error(
        &run(3314).await,
        "preflight: binary logging is off on 127.0.0.1:3314 (log_bin=OFF): zdm-ost follows changes through the binlog. Start the server with log_bin enabled (it cannot be changed at runtime), binlog_format=ROW and binlog_row_image=FULL",
    );
    let _ = c.disconnect().await;
    stop_instance("zt_binlog");
    stop_instance("zt_nobinlog");
}

/// The buffer pool is global, so this runs on a server of its own with a 6M pool: a table of
/// several MB does not fit four times over, and `auto` keeps the index during the copy.
#[tokio::test]
async fn auto_keeps_secondary_indexes_when_the_buffer_pool_cannot_hold_the_table_and_its_copy() {
    let port = 3316;
    let mut c = instance_db("zt_smallpool", port, &["--innodb-buffer-pool-size=6M"]).await;
    c.query_drop(
        "CREATE TABLE zt_smallpool.orders (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         customer VARCHAR(64) NOT NULL, qty INT NOT NULL, KEY (customer))",
    )
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO zt_smallpool.orders (customer, qty) \
         SELECT CONCAT('customer-', seq), seq % 17 FROM zt_smallpool.seq_1_to_60000",
    )
    .await
    .unwrap();
    c.query_drop("ANALYZE TABLE zt_smallpool.orders")
        .await
        .unwrap();
    let o = zdm_raw(&[
        "--port",
        &port.to_string(),
        "--database",
        "zt_smallpool",
        "--table",
        "orders",
        "--alter",
        "MODIFY qty BIGINT NOT NULL",
        "--json",
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let p = json(&o)["plan"].clone();
    assert_eq!(p["deferred_indexes"], serde_json::json!([]));
    assert_eq!(p["buffer_pool_bytes"], serde_json::json!(6 * 1024 * 1024));
    let note = p["defer_note"].as_str().unwrap();
    assert!(
        note.starts_with("kept during the copy: the buffer pool (6.0 MiB) is under 4x the table (")
            && note.ends_with("), so building them at the end would evict pages the application's writes need (--defer-indexes always defers anyway)"),
        "{note}"
    );
    c.query_drop("DROP DATABASE zt_smallpool").await.unwrap();
    let _ = c.disconnect().await;
    stop_instance("zt_smallpool");
}

#[tokio::test]
async fn plan_says_which_secondary_indexes_are_built_after_the_copy() {
    let mut db = orders("defer_plan").await;
    let alter = "ADD INDEX idx_qty (qty), MODIFY qty BIGINT NOT NULL";
    let plan = |extra: &'static [&'static str]| {
        let name = db.name.clone();
        async move {
            let mut args = vec!["--table", "orders", "--alter", alter, "--json"];
            args.extend_from_slice(extra);
            let o = zdm(&name, &args).await;
            assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
            let p = json(&o)["plan"].clone();
            let deferred: Vec<String> = p["deferred_indexes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (deferred, p["defer_note"].as_str().unwrap().to_string())
        }
    };
    // 3,000 rows and two secondary indexes: a build well within the default 1.5 s of lag
    let (deferred, note) = plan(&[]).await;
    assert_eq!(deferred, vec!["customer", "idx_qty"]);
    assert!(
        note.starts_with("built after the copy: about ")
            && note.contains(" (within --max-lag-millis), and the buffer pool (")
            && note.ends_with(") holds the table and its copy"),
        "{note}"
    );
    // with 1 ms of lag accepted, building them at the end would hold replicas back too long
    let (deferred, note) = plan(&["--max-lag-millis", "1"]).await;
    assert!(deferred.is_empty());
    assert!(
        note.starts_with("kept during the copy: building 2 index(es) over about "),
        "{note}"
    );
    assert!(note.ends_with("over --max-lag-millis (--defer-indexes always defers anyway)"));
    let (deferred, _) = plan(&["--max-lag-millis", "1", "--defer-indexes", "always"]).await;
    assert_eq!(deferred, vec!["customer", "idx_qty"]);
    let (deferred, note) = plan(&["--defer-indexes", "never"]).await;
    assert!(deferred.is_empty());
    assert_eq!(note, "kept during the copy (--defer-indexes never)");
    // a value it does not know is refused before anything is touched
    let before = db.snapshot().await;
    let o = zdm(
        &db.name,
        &[
            "--table",
            "orders",
            "--alter",
            alter,
            "--defer-indexes",
            "sometimes",
            "--execute",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: invalid value 'sometimes' for '--defer-indexes <DEFER_INDEXES>'\n  [possible values: auto, always, never]"),
        "{}",
        stderr(&o)
    );
    assert_eq!(db.snapshot().await, before);
    // the text plan lists the build as a step of its own
    let o = zdm(&db.name, &["--table", "orders", "--alter", alter]).await;
    let text = stdout(&o);
    assert!(
        text.contains("  indexes:      built after the copy: about "),
        "{text}"
    );
    assert!(
        text.contains("6. build customer, idx_qty on orders_zdm_gho in one online ALTER (ALGORITHM=INPLACE, LOCK=NONE) while changes keep being applied; replicas replay it as one statement"),
        "{text}"
    );
    db.drop_db().await;
}
