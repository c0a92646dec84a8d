//! An application stand-in: random transactions against a table **and** a control copy of it,
//! in the same transaction, while zdm-ost migrates the table. Afterwards the migrated table,
//! projected on the original columns, must equal the control table row for row, and the writer
//! must have seen no error at all.
//!
//! Rows are identified by a number `n`, mapped onto the key columns (one integer column, or a
//! composite of an integer and a string). Each writer works on its own residue class of `n`,
//! so writers never conflict with each other: any error they see is zdm-ost's doing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub enum KeyShape {
    /// One integer column.
    Single(&'static str),
    /// (integer, string): n -> (n / 10, "k<n % 10>").
    Composite(&'static str, &'static str),
    /// A BINARY(16) column holding random-looking UUID bytes ([`uuid16`]).
    Binary16(&'static str),
}

/// n -> 16 random-looking bytes, like a UUID stored in BINARY(16); every fourth ends in 0x00
/// and every sixteenth in 0x0000 (the binlog image drops trailing zero bytes).
pub fn uuid16(n: u64) -> Vec<u8> {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut b = [mix(n).to_be_bytes(), mix(n ^ 0x5555_aaaa).to_be_bytes()].concat();
    if n % 4 == 0 {
        b[15] = 0;
    }
    if n % 16 == 0 {
        b[14] = 0;
    }
    b
}

#[derive(Debug, Clone, Copy)]
pub enum Gen {
    Int,
    BigUnsigned,
    Str,
    Emoji,
    Decimal,
    DateTime6,
    Timestamp6,
    Date,
    Time3,
    Json,
    Blob,
    Enum,
    Set,
    Bit10,
}

#[derive(Debug, Clone)]
pub struct Shape {
    pub table: String,
    pub control: String,
    pub key: KeyShape,
    /// Columns the writer writes (they must exist before and after the ALTER), with a
    /// generator and whether NULL is allowed.
    pub cols: Vec<(&'static str, Gen, bool)>,
    /// Rows 1..=seeded exist before the writer starts.
    pub seeded: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub transactions: u64,
    pub errors: Vec<String>,
}

/// What the writers' transactions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Inserts, updates (some of hot rows, some of the key) and deletes.
    All,
    Inserts,
    Deletes,
}

pub struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Report>>,
}

impl Writers {
    /// Starts `n` writers on `db` (each its own connection), pausing `pause` between transactions.
    pub async fn start(
        port: u16,
        db: &str,
        shape: &Shape,
        n: u64,
        pause: Duration,
        insert_only: bool,
    ) -> Writers {
        let mix = if insert_only { Mix::Inserts } else { Mix::All };
        Self::start_mix(port, db, shape, n, pause, mix).await
    }

    /// Like [`Writers::start`], with the kind of transactions chosen.
    pub async fn start_mix(
        port: u16,
        db: &str,
        shape: &Shape,
        n: u64,
        pause: Duration,
        mix: Mix,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..n {
            let mut conn = Conn::new(super::opts(port, "root", None, Some(db)))
                .await
                .unwrap();
            let shape = shape.clone();
            let stop = Arc::clone(&stop);
            handles.push(tokio::spawn(async move {
                let mut rep = Report::default();
                let mut st = WriterState {
                    w,
                    n,
                    next: shape.seeded + 1,
                    rng: StdRng::seed_from_u64(0x5eed + w),
                };
                while !stop.load(Ordering::Relaxed) {
                    match st.transaction(&mut conn, &shape, mix).await {
                        Ok(()) => rep.transactions += 1,
                        Err(e) => {
                            rep.errors.push(e.to_string());
                            let _ = conn.query_drop("ROLLBACK").await;
                        }
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                let _ = conn.disconnect().await;
                rep
            }));
        }
        Writers { stop, handles }
    }

    /// Stops the writers and asserts they saw no error at all: application transactions may
    /// stall while zdm-ost works, never fail.
    pub async fn stop_without_errors(self) -> Report {
        let report = self.stop().await;
        assert!(
            report.errors.is_empty(),
            "application transactions failed: {:?}",
            report.errors
        );
        report
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for h in self.handles {
            let r = h.await.unwrap();
            total.transactions += r.transactions;
            total.errors.extend(r.errors);
        }
        total
    }
}

struct WriterState {
    w: u64,
    n: u64,
    next: u64,
    rng: StdRng,
}

impl WriterState {
    /// A fresh n of this writer's residue class.
    fn fresh(&mut self) -> u64 {
        while self.next % self.n != self.w {
            self.next += 1;
        }
        let v = self.next;
        self.next += 1;
        v
    }

    /// Some n of this writer's class that may exist (or may have been deleted).
    fn existing(&mut self) -> u64 {
        let hi = self.next.max(2);
        let mut v = self.rng.gen_range(1..hi);
        while v % self.n != self.w {
            v += 1;
        }
        v
    }

    /// One of this writer's few hot rows.
    fn hot(&mut self) -> u64 {
        let mut v = 1 + self.rng.gen_range(0..3) * self.n;
        while v % self.n != self.w {
            v += 1;
        }
        v
    }

    async fn transaction(
        &mut self,
        conn: &mut Conn,
        shape: &Shape,
        mix: Mix,
    ) -> Result<(), mysql_async::Error> {
        conn.query_drop("START TRANSACTION").await?;
        let ops = self.rng.gen_range(1..=3);
        for _ in 0..ops {
            let roll = match mix {
                Mix::Inserts => 0,
                Mix::Deletes => 80,
                Mix::All => self.rng.gen_range(0..100),
            };
            match roll {
                0..=39 => {
                    let n = self.fresh();
                    let vals = self.values(shape);
                    for t in [&shape.table, &shape.control] {
                        insert(conn, t, shape, n, &vals).await?;
                    }
                }
                40..=79 => {
                    let n = if roll < 65 {
                        self.existing()
                    } else {
                        self.hot()
                    };
                    let k = self.rng.gen_range(0..shape.cols.len());
                    let (col, gen, nullable) = shape.cols[k];
                    let v = self.value(gen, nullable);
                    let (pred, params) = key_pred(&shape.key, n);
                    for t in [&shape.table, &shape.control] {
                        let mut p = vec![v.clone()];
                        p.extend(params.clone());
                        conn.exec_drop(format!("UPDATE `{t}` SET `{col}` = ? WHERE {pred}"), p)
                            .await?;
                    }
                }
                80..=89 => {
                    let n = self.existing();
                    let (pred, params) = key_pred(&shape.key, n);
                    for t in [&shape.table, &shape.control] {
                        conn.exec_drop(format!("DELETE FROM `{t}` WHERE {pred}"), params.clone())
                            .await?;
                    }
                }
                _ => {
                    // an UPDATE that changes the key
                    let old = self.existing();
                    let new = self.fresh();
                    let (set, mut params) = key_set(&shape.key, new);
                    let (pred, wparams) = key_pred(&shape.key, old);
                    params.extend(wparams);
                    for t in [&shape.table, &shape.control] {
                        conn.exec_drop(
                            format!("UPDATE `{t}` SET {set} WHERE {pred}"),
                            params.clone(),
                        )
                        .await?;
                    }
                }
            }
        }
        conn.query_drop("COMMIT").await
    }

    fn values(&mut self, shape: &Shape) -> Vec<Value> {
        shape
            .cols
            .iter()
            .map(|&(_, g, nullable)| self.value(g, nullable))
            .collect()
    }

    fn value(&mut self, g: Gen, nullable: bool) -> Value {
        if nullable && self.rng.gen_bool(0.1) {
            return Value::NULL;
        }
        let r = &mut self.rng;
        match g {
            Gen::Int => Value::Int(r.gen_range(-1_000_000..1_000_000)),
            Gen::BigUnsigned => Value::UInt(match r.gen_range(0..4) {
                0 => u64::MAX,
                1 => 0,
                _ => r.gen(),
            }),
            Gen::Str => Value::Bytes(format!("s{}", r.gen_range(0..1_000_000)).into_bytes()),
            Gen::Emoji => Value::Bytes(format!("héllo 😀 ✓ {}", r.gen_range(0..1000)).into_bytes()),
            Gen::Decimal => Value::Bytes(
                format!(
                    "{}{}.{:06}",
                    if r.gen_bool(0.3) { "-" } else { "" },
                    r.gen_range(0..99_999_999_999_999u64),
                    r.gen_range(0..1_000_000)
                )
                .into_bytes(),
            ),
            Gen::DateTime6 => Value::Date(
                r.gen_range(1000..9999),
                r.gen_range(1..13),
                r.gen_range(1..29),
                r.gen_range(0..24),
                r.gen_range(0..60),
                r.gen_range(0..60),
                r.gen_range(0..1_000_000),
            ),
            Gen::Timestamp6 => Value::Bytes(
                format!(
                    "{}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
                    r.gen_range(1971..2037),
                    r.gen_range(1..13),
                    r.gen_range(1..29),
                    r.gen_range(0..24),
                    r.gen_range(0..60),
                    r.gen_range(0..60),
                    r.gen_range(0..1_000_000)
                )
                .into_bytes(),
            ),
            Gen::Date => Value::Date(
                r.gen_range(1000..9999),
                r.gen_range(1..13),
                r.gen_range(1..29),
                0,
                0,
                0,
                0,
            ),
            Gen::Time3 => Value::Time(
                r.gen_bool(0.3),
                r.gen_range(0..34),
                r.gen_range(0..22),
                r.gen_range(0..60),
                r.gen_range(0..60),
                r.gen_range(0..1000) * 1000,
            ),
            Gen::Json => Value::Bytes(
                format!(
                    "{{\"k\": {}, \"s\": \"v{}\", \"a\": [1, 2]}}",
                    r.gen_range(0..1000),
                    r.gen_range(0..1000)
                )
                .into_bytes(),
            ),
            Gen::Blob => Value::Bytes((0..r.gen_range(0..64)).map(|_| r.gen::<u8>()).collect()),
            Gen::Enum => Value::Bytes(["a", "b", "c"][r.gen_range(0..3)].into()),
            Gen::Set => Value::Bytes(["", "x", "y,z", "x,y,z"][r.gen_range(0..4)].into()),
            Gen::Bit10 => Value::UInt(r.gen_range(0..1024)),
        }
    }
}

async fn insert(
    conn: &mut Conn,
    table: &str,
    shape: &Shape,
    n: u64,
    vals: &[Value],
) -> Result<(), mysql_async::Error> {
    let (kcols, mut params) = key_values(&shape.key, n);
    let mut cols: Vec<String> = kcols.iter().map(|c| format!("`{c}`")).collect();
    cols.extend(shape.cols.iter().map(|(c, _, _)| format!("`{c}`")));
    params.extend(vals.iter().cloned());
    let marks = vec!["?"; cols.len()].join(", ");
    conn.exec_drop(
        format!(
            "INSERT INTO `{table}` ({}) VALUES ({marks})",
            cols.join(", ")
        ),
        params,
    )
    .await
}

fn key_values(k: &KeyShape, n: u64) -> (Vec<&'static str>, Vec<Value>) {
    match k {
        KeyShape::Single(c) => (vec![c], vec![Value::UInt(n)]),
        KeyShape::Binary16(c) => (vec![c], vec![Value::Bytes(uuid16(n))]),
        KeyShape::Composite(a, b) => (
            vec![a, b],
            vec![
                Value::UInt(n / 10),
                Value::Bytes(format!("k{}", n % 10).into_bytes()),
            ],
        ),
    }
}

fn key_pred(k: &KeyShape, n: u64) -> (String, Vec<Value>) {
    let (cols, vals) = key_values(k, n);
    (
        cols.iter()
            .map(|c| format!("`{c}` = ?"))
            .collect::<Vec<_>>()
            .join(" AND "),
        vals,
    )
}

fn key_set(k: &KeyShape, n: u64) -> (String, Vec<Value>) {
    let (cols, vals) = key_values(k, n);
    (
        cols.iter()
            .map(|c| format!("`{c}` = ?"))
            .collect::<Vec<_>>()
            .join(", "),
        vals,
    )
}
