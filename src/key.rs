//! Row identity: the values of the key that identifies a row in both tables, as read from the
//! binlog or from the table, and the SQL predicates that select rows by key.
//!
//! A [`Key`] is hashable so the applier can deduplicate changed rows. Binlog values are turned
//! into keys with the traps measured on MariaDB handled here, in one place:
//! - without `binlog_row_metadata=FULL`, unsigned integers arrive as negative signed values:
//!   they are reinterpreted by the column's width;
//! - mysql_common 0.37 does not sign-extend signed MEDIUMINT;
//! - TIMESTAMP arrives as a string of UTC epoch seconds (fraction only when non-zero): it becomes
//!   a UTC date-time, which is what zdm-ost's sessions (time zone +00:00) compare with;
//! - SET arrives as a little-endian bitmask, BIT as big-endian bytes: both become integers.
//!
//! Predicates bind every value as a parameter. A composite key's comparisons are expanded into
//! `a > ? OR (a = ? AND b > ?)` forms, which every optimizer turns into index ranges.

use mysql_async::Value;

use crate::sql::quote_ident;

/// One column of the key, as `information_schema` describes it in the original table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyColumn {
    pub name: String,
    /// 0-based position in the original table (the binlog row image's order).
    pub ordinal: usize,
    /// `DATA_TYPE`, lower case: "int", "bigint", "varchar", "timestamp", ...
    pub data_type: String,
    pub unsigned: bool,
}

/// One value of a key, hashable (and serialisable, for the checkpoint's watermark).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum KeyPart {
    Int(i64),
    UInt(u64),
    Bytes(Vec<u8>),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
    /// A float's bits (floats as keys are rare; equality is the server's business).
    Float(u64),
    Double(u64),
}

pub type Key = Box<[KeyPart]>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot use {value} as a value of key column `{column}` ({data_type})")]
pub struct KeyValueError {
    pub column: String,
    pub data_type: String,
    pub value: String,
}

impl KeyPart {
    pub fn to_value(&self) -> Value {
        match self {
            KeyPart::Int(i) => Value::Int(*i),
            KeyPart::UInt(u) => Value::UInt(*u),
            KeyPart::Bytes(b) => Value::Bytes(b.clone()),
            KeyPart::Date(y, m, d, h, mi, s, us) => Value::Date(*y, *m, *d, *h, *mi, *s, *us),
            KeyPart::Time(neg, d, h, mi, s, us) => Value::Time(*neg, *d, *h, *mi, *s, *us),
            KeyPart::Float(b) => Value::Float(f32::from_bits(*b as u32)),
            KeyPart::Double(b) => Value::Double(f64::from_bits(*b)),
        }
    }

    /// A key value as the server returned it from a query (text or binary protocol).
    pub fn from_query_value(v: Value) -> KeyPart {
        match v {
            Value::Int(i) => KeyPart::Int(i),
            Value::UInt(u) => KeyPart::UInt(u),
            Value::Bytes(b) => KeyPart::Bytes(b),
            Value::Date(y, m, d, h, mi, s, us) => KeyPart::Date(y, m, d, h, mi, s, us),
            Value::Time(n, d, h, mi, s, us) => KeyPart::Time(n, d, h, mi, s, us),
            Value::Float(f) => KeyPart::Float(f.to_bits() as u64),
            Value::Double(f) => KeyPart::Double(f.to_bits()),
            Value::NULL => KeyPart::Bytes(Vec::new()),
        }
    }

    /// A key value as decoded from a binlog row image; see the module docs.
    pub fn from_binlog_value(v: &Value, col: &KeyColumn) -> Result<KeyPart, KeyValueError> {
        let err = || KeyValueError {
            column: col.name.clone(),
            data_type: col.data_type.clone(),
            value: format!("{v:?}"),
        };
        let t = col.data_type.as_str();
        Ok(match v {
            Value::Int(i) => {
                let i = *i;
                if col.unsigned {
                    let u = i as u64;
                    KeyPart::UInt(match t {
                        "tinyint" => u & 0xff,
                        "smallint" => u & 0xffff,
                        "mediumint" => u & 0xff_ffff,
                        "int" | "integer" => u & 0xffff_ffff,
                        _ => u,
                    })
                } else if t == "mediumint" && i >= 0x80_0000 {
                    KeyPart::Int(i - 0x100_0000)
                } else {
                    KeyPart::Int(i)
                }
            }
            Value::UInt(u) => KeyPart::UInt(*u),
            Value::Bytes(b) => match t {
                "timestamp" => timestamp_from_epoch(b).ok_or_else(err)?,
                "set" => KeyPart::UInt(b.iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64)),
                "bit" => KeyPart::UInt(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)),
                _ => KeyPart::Bytes(b.clone()),
            },
            Value::Date(y, m, d, h, mi, s, us) => KeyPart::Date(*y, *m, *d, *h, *mi, *s, *us),
            Value::Time(n, d, h, mi, s, us) => KeyPart::Time(*n, *d, *h, *mi, *s, *us),
            Value::Float(f) => KeyPart::Float(f.to_bits() as u64),
            Value::Double(f) => KeyPart::Double(f.to_bits()),
            Value::NULL => return Err(err()),
        })
    }
}

/// "1704164645.654321" (UTC epoch seconds) -> a UTC date-time.
fn timestamp_from_epoch(b: &[u8]) -> Option<KeyPart> {
    let s = std::str::from_utf8(b).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, f)) => (a, f),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut us: u32 = 0;
    if !frac.is_empty() {
        let padded = format!("{frac:0<6}");
        us = padded.get(..6)?.parse().ok()?;
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Some(KeyPart::Date(
        y as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
        us,
    ))
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Orders two keys of integer columns as the index does (signed and unsigned values compare
/// by value); `None` when a part is not an integer.
pub fn cmp_integer_keys(a: &Key, b: &Key) -> Option<std::cmp::Ordering> {
    fn int(p: &KeyPart) -> Option<i128> {
        match p {
            KeyPart::Int(i) => Some(*i as i128),
            KeyPart::UInt(u) => Some(*u as i128),
            _ => None,
        }
    }
    for (x, y) in a.iter().zip(b.iter()) {
        match int(x)?.cmp(&int(y)?) {
            std::cmp::Ordering::Equal => continue,
            o => return Some(o),
        }
    }
    Some(a.len().cmp(&b.len()))
}

/// `cols IN (keys)`: `c IN (?, ?)` for one column, `(a = ? AND b = ?) OR (...)` for several.
/// Returns the SQL (parenthesised) and its parameters in order.
pub fn in_predicate(cols: &[String], keys: &[&Key]) -> (String, Vec<Value>) {
    let mut params = Vec::with_capacity(keys.len() * cols.len());
    if cols.len() == 1 {
        let marks = vec!["?"; keys.len()].join(", ");
        for k in keys {
            params.push(k[0].to_value());
        }
        return (format!("({} IN ({marks}))", quote_ident(&cols[0])), params);
    }
    let one = format!(
        "({})",
        cols.iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    for k in keys {
        params.extend(k.iter().map(KeyPart::to_value));
    }
    (
        format!("({})", vec![one.as_str(); keys.len()].join(" OR ")),
        params,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Le,
}

/// `cols <op> key` in lexicographic order, expanded for composite keys:
/// `(a > ?) OR (a = ? AND b > ?)`.
pub fn compare_predicate(cols: &[String], op: Cmp, key: &Key) -> (String, Vec<Value>) {
    let (strict, last) = match op {
        Cmp::Gt => (">", ">"),
        Cmp::Ge => (">", ">="),
        Cmp::Le => ("<", "<="),
    };
    let mut terms = Vec::with_capacity(cols.len());
    let mut params = Vec::new();
    for i in 0..cols.len() {
        let mut parts = Vec::with_capacity(i + 1);
        for (j, col) in cols.iter().enumerate().take(i) {
            parts.push(format!("{} = ?", quote_ident(col)));
            params.push(key[j].to_value());
        }
        let op = if i + 1 == cols.len() { last } else { strict };
        parts.push(format!("{} {op} ?", quote_ident(&cols[i])));
        params.push(key[i].to_value());
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (format!("({})", terms.join(" OR ")), params)
}

/// The range `lo < key <= hi` (either bound may be absent).
pub fn range_predicate(
    cols: &[String],
    lo: Option<&Key>,
    hi: Option<&Key>,
) -> (String, Vec<Value>) {
    let mut sql = Vec::new();
    let mut params = Vec::new();
    if let Some(lo) = lo {
        let (s, p) = compare_predicate(cols, Cmp::Gt, lo);
        sql.push(s);
        params.extend(p);
    }
    if let Some(hi) = hi {
        let (s, p) = compare_predicate(cols, Cmp::Le, hi);
        sql.push(s);
        params.extend(p);
    }
    if sql.is_empty() {
        return ("(1 = 1)".into(), params);
    }
    (format!("({})", sql.join(" AND ")), params)
}

/// A key shown to a person: `id=42` or `(a=1, b='x')`.
pub fn display_key(cols: &[String], key: &Key) -> String {
    let parts: Vec<String> = cols
        .iter()
        .zip(key.iter())
        .map(|(c, v)| format!("{c}={}", display_part(v)))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("({})", parts.join(", "))
    }
}

/// A key range `(lo, hi]` shown to a person: `after id=1 .. up to id=9`, open ends spelt out.
pub fn display_range(cols: &[String], lo: Option<&Key>, hi: Option<&Key>) -> String {
    format!(
        "{} .. {}",
        lo.map(|k| format!("after {}", display_key(cols, k)))
            .unwrap_or_else(|| "from the start".into()),
        hi.map(|k| format!("up to {}", display_key(cols, k)))
            .unwrap_or_else(|| "to the end".into())
    )
}

fn display_part(v: &KeyPart) -> String {
    match v {
        KeyPart::Int(i) => i.to_string(),
        KeyPart::UInt(u) => u.to_string(),
        KeyPart::Bytes(b) => format!("'{}'", String::from_utf8_lossy(b)),
        KeyPart::Date(y, m, d, h, mi, s, us) => {
            format!("'{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
        }
        KeyPart::Time(n, d, h, mi, s, us) => {
            format!(
                "'{}{}:{mi:02}:{s:02}.{us:06}'",
                if *n { "-" } else { "" },
                *d * 24 + *h as u32
            )
        }
        KeyPart::Float(b) => f32::from_bits(*b as u32).to_string(),
        KeyPart::Double(b) => f64::from_bits(*b).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: &str, unsigned: bool) -> KeyColumn {
        KeyColumn {
            name: "k".into(),
            ordinal: 0,
            data_type: t.into(),
            unsigned,
        }
    }

    #[test]
    fn integer_keys_order_by_value_and_composite_keys_lexicographically() {
        use std::cmp::Ordering::*;
        let k = |v: &[KeyPart]| -> Key { v.to_vec().into_boxed_slice() };
        // a watermark read back as signed, a binlog key of the same column as unsigned
        assert_eq!(
            cmp_integer_keys(&k(&[KeyPart::Int(5)]), &k(&[KeyPart::UInt(7)])),
            Some(Less)
        );
        assert_eq!(
            cmp_integer_keys(&k(&[KeyPart::UInt(u64::MAX)]), &k(&[KeyPart::Int(-1)])),
            Some(Greater)
        );
        assert_eq!(
            cmp_integer_keys(&k(&[KeyPart::Int(3)]), &k(&[KeyPart::UInt(3)])),
            Some(Equal)
        );
        let ab = |a, b| k(&[KeyPart::Int(a), KeyPart::Int(b)]);
        assert_eq!(cmp_integer_keys(&ab(1, 9), &ab(2, 0)), Some(Less));
        assert_eq!(cmp_integer_keys(&ab(2, 1), &ab(2, 0)), Some(Greater));
        // strings follow collations: no order is claimed
        assert_eq!(
            cmp_integer_keys(&k(&[KeyPart::Bytes(b"a".to_vec())]), &k(&[KeyPart::Int(1)])),
            None
        );
    }

    #[test]
    fn unsigned_values_without_metadata_are_reinterpreted_by_width() {
        let f =
            |t: &str, v: i64| KeyPart::from_binlog_value(&Value::Int(v), &col(t, true)).unwrap();
        assert_eq!(f("bigint", -1), KeyPart::UInt(u64::MAX));
        assert_eq!(f("int", -1), KeyPart::UInt(u32::MAX as u64));
        assert_eq!(f("smallint", -1), KeyPart::UInt(65535));
        assert_eq!(f("tinyint", -1), KeyPart::UInt(255));
        assert_eq!(f("mediumint", -1), KeyPart::UInt(0xff_ffff));
        assert_eq!(f("int", 7), KeyPart::UInt(7));
    }

    #[test]
    fn signed_mediumint_is_sign_extended() {
        let f =
            |v: i64| KeyPart::from_binlog_value(&Value::Int(v), &col("mediumint", false)).unwrap();
        assert_eq!(f(8_388_608), KeyPart::Int(-8_388_608));
        assert_eq!(f(0xff_ffff), KeyPart::Int(-1));
        assert_eq!(f(8_388_607), KeyPart::Int(8_388_607));
    }

    #[test]
    fn timestamps_set_and_bit_become_comparable_values() {
        let ts = |s: &str| {
            KeyPart::from_binlog_value(&Value::Bytes(s.into()), &col("timestamp", false)).unwrap()
        };
        assert_eq!(
            ts("1704164645.654321"),
            KeyPart::Date(2024, 1, 2, 3, 4, 5, 654_321)
        );
        assert_eq!(ts("1704164645"), KeyPart::Date(2024, 1, 2, 3, 4, 5, 0));
        assert_eq!(
            ts("951782400.5"),
            KeyPart::Date(2000, 2, 29, 0, 0, 0, 500_000)
        );
        assert_eq!(ts("0"), KeyPart::Date(1970, 1, 1, 0, 0, 0, 0));
        let set = KeyPart::from_binlog_value(&Value::Bytes(vec![0x05, 0x01]), &col("set", false))
            .unwrap();
        assert_eq!(set, KeyPart::UInt(0x0105));
        let bit = KeyPart::from_binlog_value(&Value::Bytes(vec![0x02, 0x01]), &col("bit", false))
            .unwrap();
        assert_eq!(bit, KeyPart::UInt(0x0201));
        assert!(KeyPart::from_binlog_value(&Value::NULL, &col("int", false)).is_err());
    }

    #[test]
    fn predicates_bind_every_value_and_expand_composite_keys() {
        let one = vec!["id".to_string()];
        let k1: Key = vec![KeyPart::Int(1)].into();
        let k2: Key = vec![KeyPart::Int(2)].into();
        let (sql, p) = in_predicate(&one, &[&k1, &k2]);
        assert_eq!(sql, "(`id` IN (?, ?))");
        assert_eq!(p, vec![Value::Int(1), Value::Int(2)]);
        let two = vec!["a".to_string(), "b`".to_string()];
        let c: Key = vec![KeyPart::Int(1), KeyPart::Bytes(b"x".to_vec())].into();
        let (sql, p) = in_predicate(&two, &[&c]);
        assert_eq!(sql, "((`a` = ? AND `b``` = ?))");
        assert_eq!(p.len(), 2);
        let (sql, p) = compare_predicate(&two, Cmp::Gt, &c);
        assert_eq!(sql, "((`a` > ?) OR (`a` = ? AND `b``` > ?))");
        assert_eq!(
            p,
            vec![Value::Int(1), Value::Int(1), Value::Bytes(b"x".to_vec())]
        );
        let (sql, _) = compare_predicate(&two, Cmp::Le, &c);
        assert_eq!(sql, "((`a` < ?) OR (`a` = ? AND `b``` <= ?))");
        let (sql, p) = range_predicate(&one, Some(&k1), Some(&k2));
        assert_eq!(sql, "(((`id` > ?)) AND ((`id` <= ?)))");
        assert_eq!(p, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(range_predicate(&one, None, None).0, "(1 = 1)");
        assert_eq!(display_key(&two, &c), "(a=1, b`='x')");
    }
}
