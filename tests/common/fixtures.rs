//! The standard test table and the comparisons every engine test makes: `t` and its control
//! copy `ctl`, seeded alike; rows read as values; the new table against the control table.

use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};

use super::writer::{Gen, KeyShape, Shape, Writers};
use super::{primary_port, TestDb};

pub const STD_TABLE: &str =
    "(id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, a INT NOT NULL, \
     b VARCHAR(100) NULL, c DATETIME(6) NULL, d DECIMAL(20,6) NOT NULL DEFAULT 0, KEY ka (a))";

/// Creates `t` and `ctl` with the same definition and seeds `rows` rows into both.
pub async fn std_table(db: &mut TestDb, rows: u64) {
    db.exec(&format!("CREATE TABLE t {STD_TABLE}")).await;
    db.exec(&format!("CREATE TABLE ctl {STD_TABLE}")).await;
    if rows > 0 {
        db.exec(&format!(
            "INSERT INTO t (id, a, b, c, d) SELECT seq, seq % 1000, CONCAT('b', seq), '2024-01-01' + INTERVAL seq SECOND, seq / 7 \
             FROM seq_1_to_{rows}"
        ))
        .await;
        db.exec("INSERT INTO ctl SELECT * FROM t").await;
    }
}

/// A new test database with [`std_table`] seeded with `rows` rows, and `n` writers changing it
/// (every kind of change, `pause` between transactions).
pub async fn std_table_with_writers(
    test: &str,
    rows: u64,
    n: u64,
    pause: std::time::Duration,
) -> (TestDb, Writers) {
    let mut db = TestDb::new(test).await;
    std_table(&mut db, rows).await;
    let writers = Writers::start(
        primary_port(),
        &db.name,
        &std_shape(std_cols(), rows),
        n,
        pause,
        false,
    )
    .await;
    (db, writers)
}

pub fn std_cols() -> Vec<(&'static str, Gen, bool)> {
    vec![
        ("a", Gen::Int, false),
        ("b", Gen::Str, true),
        ("c", Gen::DateTime6, true),
        ("d", Gen::Decimal, false),
    ]
}

/// The writer's view of `t`/`ctl`, writing `cols`.
pub fn std_shape(cols: Vec<(&'static str, Gen, bool)>, seeded: u64) -> Shape {
    Shape {
        table: "t".into(),
        control: "ctl".into(),
        key: KeyShape::Single("id"),
        cols,
        seeded,
    }
}

pub async fn rows(conn: &mut Conn, sql: &str) -> Vec<Vec<Value>> {
    let rows: Vec<Row> = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// The new table projected by `new_sql` equals the control table projected by `ctl_sql`;
/// returns the row count.
pub async fn assert_same_rows(conn: &mut Conn, new_sql: &str, ctl_sql: &str) -> usize {
    let a = rows(conn, new_sql).await;
    let b = rows(conn, ctl_sql).await;
    if a != b {
        let first = a
            .iter()
            .zip(b.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "tables differ: {} rows vs {} control rows; first difference at row {first}:\n  new: {:?}\n  ctl: {:?}",
            a.len(),
            b.len(),
            a.get(first),
            b.get(first)
        );
    }
    a.len()
}

/// `t` equals `ctl` over the standard columns.
pub async fn assert_same_as_control(conn: &mut Conn) -> usize {
    assert_same_rows(
        conn,
        "SELECT id, a, b, c, d FROM t ORDER BY id",
        "SELECT id, a, b, c, d FROM ctl ORDER BY id",
    )
    .await
}

/// The `zdm-ost: error: ...` line of a run's stderr.
pub fn error_line(err: &str) -> String {
    err.lines()
        .find(|l| l.starts_with("zdm-ost: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"))
        .to_string()
}
