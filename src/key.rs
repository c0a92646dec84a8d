//! Row identity: the values of the key that identifies a row in both tables, as read from the
//! binlog or from the table, and the SQL predicates that select rows by key.
//!
//! This is the one key codec (docs/design.md, fidelity rule 1): a value read from a binlog row
//! image is not yet a SQL value, and a value bound as a plain parameter is not always compared
//! the way the column compares. Everything that names a row by key (the applier, the copier's
//! and the checksum's chunk bounds, the cut-over) goes through [`KeyPart::from_binlog_value`],
//! [`KeyColumn::read_expr`] and the predicates here, which bind each value through
//! [`KeyColumn::mark`]. What the image carries, measured on MariaDB 10.11:
//! - without `binlog_row_metadata=FULL`, unsigned integers arrive as negative signed values:
//!   they are reinterpreted by the column's width; signed MEDIUMINT is not sign-extended by
//!   mysql_common 0.37;
//! - BINARY(n) arrives without its trailing 0x00 pad bytes: they are put back;
//! - ENUM arrives as the member's index, SET as a little-endian bitmask, BIT as big-endian
//!   bytes: all become integers, compared by index, bitmask (as the signed BIGINT the server
//!   compares a SET with) or value. Ranges need the index order; the plan refuses a key whose
//!   member list changes other than by appending, so an index names one member in both tables;
//! - YEAR 0000 arrives as "1900";
//! - TIMESTAMP arrives as UTC epoch seconds ("0" for the zero value): it is bound through
//!   `FROM_UNIXTIME`, so it names the same instant in any session time zone (one with daylight
//!   saving has an ambiguous hour a year: the plan refuses TIMESTAMP keys there);
//! - MariaDB's UUID, INET4 and INET6 arrive in their binary form: they become their text form,
//!   which the server parses back;
//! - strings arrive as bytes in the column's own charset: they are bound as bytes and converted
//!   to the column's charset and collation in SQL, never through the connection's utf8mb4.
//!
//! Keys read back from a table select the same canonical forms ([`KeyColumn::read_expr`]).
//! Predicates bind every value as a parameter. A composite key's comparisons are expanded into
//! `a > ? OR (a = ? AND b > ?)` forms, which every optimizer turns into index ranges.

use mysql_async::Value;

use crate::sql::quote_ident;

/// One column of the key, as `information_schema` describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyColumn {
    pub name: String,
    /// 0-based position in the table (the binlog row image's order).
    pub ordinal: usize,
    /// `DATA_TYPE`, lower case: "int", "bigint", "varchar", "timestamp", ...
    pub data_type: String,
    /// `COLUMN_TYPE`, lower case: "binary(16)", "enum('a','b')", "decimal(10,3)", ...
    pub column_type: String,
    pub unsigned: bool,
    /// `CHARACTER_SET_NAME` and `COLLATION_NAME`, for text columns.
    pub charset: Option<String>,
    pub collation: Option<String>,
}

/// ENUM members up to which a range over an ENUM column is bound as an `IN` list of indexes
/// (the server turns `e > 2` over an ENUM into a full index scan, `e IN (3, 4)` into ranges).
const ENUM_IN_LIST_MAX: usize = 64;

impl KeyColumn {
    pub fn new(
        name: &str,
        ordinal: usize,
        column_type: &str,
        charset: Option<&str>,
        collation: Option<&str>,
    ) -> KeyColumn {
        let ct = column_type.to_ascii_lowercase();
        KeyColumn {
            name: name.to_string(),
            ordinal,
            data_type: base_type(&ct).to_string(),
            unsigned: ct.contains("unsigned"),
            column_type: ct,
            charset: charset.map(str::to_ascii_lowercase),
            collation: collation.map(str::to_ascii_lowercase),
        }
    }

    /// The same column under another name (the ghost's, after a rename).
    pub fn renamed(&self, name: &str) -> KeyColumn {
        KeyColumn {
            name: name.to_string(),
            ..self.clone()
        }
    }

    /// A string type whose bytes are characters of a charset.
    fn is_text(&self) -> bool {
        matches!(
            self.data_type.as_str(),
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
        ) && self.charset.as_deref().is_some_and(|c| c != "binary")
    }

    /// The first number in the type's parentheses: BINARY(16) -> 16.
    fn length(&self) -> Option<usize> {
        type_args(&self.column_type).first().map(|n| *n as usize)
    }

    /// The number of members of an ENUM.
    fn enum_members(&self) -> usize {
        type_members(&self.column_type).len()
    }

    /// Whether values of this column are bound as hex text: string bytes in a charset of their
    /// own, or binary. A parameter reaches the server as a string of the connection's charset
    /// (utf8mb4), which it checks: latin1 `ö` (0xF6) failed with "Invalid utf8mb4 character
    /// string", or silently matched nothing.
    fn bound_as_hex(&self) -> bool {
        self.is_text()
            || matches!(
                self.data_type.as_str(),
                "char" | "varchar" | "binary" | "varbinary"
            )
    }

    /// The SQL that binds one value of this column, with [`KeyColumn::bind`]: a `?` the server
    /// compares exactly as the column's own values.
    pub fn mark(&self) -> String {
        match self.data_type.as_str() {
            _ if self.is_text() => {
                let cs = self.charset.as_deref().unwrap_or("utf8mb4");
                match &self.collation {
                    Some(coll) => format!("CONVERT(UNHEX(?) USING {cs}) COLLATE {coll}"),
                    None => format!("CONVERT(UNHEX(?) USING {cs})"),
                }
            }
            _ if self.bound_as_hex() => "UNHEX(?)".into(),
            "decimal" | "numeric" => {
                let args: Vec<String> = type_args(&self.column_type)
                    .iter()
                    .map(u32::to_string)
                    .collect();
                let args = if args.is_empty() {
                    "10,0".into()
                } else {
                    args.join(",")
                };
                format!("CAST(? AS DECIMAL({args}))")
            }
            "timestamp" => {
                "COALESCE(FROM_UNIXTIME(NULLIF(?, 0)), TIMESTAMP'0000-00-00 00:00:00')".into()
            }
            _ => "?".into(),
        }
    }

    /// The parameter for one value of this column, for its [`KeyColumn::mark`].
    pub fn bind(&self, v: &KeyPart) -> Value {
        match v {
            KeyPart::Bytes(b) if self.bound_as_hex() => Value::Bytes(
                b.iter()
                    .map(|x| format!("{x:02X}"))
                    .collect::<String>()
                    .into_bytes(),
            ),
            _ => v.to_value(),
        }
    }

    /// The expression that reads this column's value from a table in the form
    /// [`KeyPart::from_binlog_value`] gives it, so a key read back binds as one from the binlog.
    pub fn read_expr(&self) -> String {
        let q = quote_ident(&self.name);
        match self.data_type.as_str() {
            "enum" | "set" | "bit" => format!("{q} + 0"),
            "timestamp" => format!("UNIX_TIMESTAMP({q})"),
            _ if self.is_text() => format!("CAST({q} AS BINARY)"),
            _ => q,
        }
    }
}

/// A `COLUMN_TYPE`'s base type: "decimal(10,3) unsigned" -> "decimal".
pub fn base_type(column_type: &str) -> &str {
    column_type.split(['(', ' ']).next().unwrap_or("")
}

/// The numbers in a `COLUMN_TYPE`'s parentheses: "decimal(10,3)" -> [10, 3] (none for an
/// ENUM's quoted members).
pub fn type_args(column_type: &str) -> Vec<u32> {
    column_type
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The quoted members of an ENUM or SET `COLUMN_TYPE`, `''` unescaped.
pub fn type_members(column_type: &str) -> Vec<String> {
    let Some((_, list)) = column_type.split_once('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match (&mut cur, c) {
            (Some(s), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                s.push('\'');
            }
            (Some(_), '\'') => out.push(cur.take().unwrap_or_default()),
            (Some(s), c) => s.push(c),
            (None, '\'') => cur = Some(String::new()),
            (None, _) => {}
        }
    }
    out
}

/// The names of key columns.
pub fn names(cols: &[KeyColumn]) -> Vec<String> {
    cols.iter().map(|c| c.name.clone()).collect()
}

/// The expressions that read a key back from a table, comma-separated ([`KeyColumn::read_expr`]).
pub fn read_list(cols: &[KeyColumn]) -> String {
    cols.iter()
        .map(KeyColumn::read_expr)
        .collect::<Vec<_>>()
        .join(", ")
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
                // epoch seconds, bound through FROM_UNIXTIME (see KeyColumn::mark)
                "timestamp" => {
                    let s = std::str::from_utf8(b).map_err(|_| err())?;
                    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                        return Err(err());
                    }
                    KeyPart::Bytes(b.clone())
                }
                // the server compares a SET with a number by its value as a signed BIGINT
                // (`s + 0` of the 64th member is negative): so does the key
                "set" => {
                    KeyPart::Int(b.iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64) as i64)
                }
                "bit" => KeyPart::UInt(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)),
                // mysql_common reads YEAR as 1900 + the stored byte: 1900 is YEAR 0000
                "year" => {
                    let y: u64 = std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(err)?;
                    KeyPart::UInt(if y == 1900 { 0 } else { y })
                }
                "binary" => KeyPart::Bytes(padded(b, col.length().unwrap_or(0))),
                // fixed-width types lose trailing zero bytes in the image too
                "uuid" => {
                    let hex: String = padded(b, 16).iter().map(|x| format!("{x:02x}")).collect();
                    if hex.len() != 32 {
                        return Err(err());
                    }
                    KeyPart::Bytes(
                        format!(
                            "{}-{}-{}-{}-{}",
                            &hex[..8],
                            &hex[8..12],
                            &hex[12..16],
                            &hex[16..20],
                            &hex[20..]
                        )
                        .into_bytes(),
                    )
                }
                "inet6" => {
                    let a: [u8; 16] = padded(b, 16).try_into().map_err(|_| err())?;
                    KeyPart::Bytes(std::net::Ipv6Addr::from(a).to_string().into_bytes())
                }
                "inet4" => {
                    let a: [u8; 4] = padded(b, 4).try_into().map_err(|_| err())?;
                    KeyPart::Bytes(std::net::Ipv4Addr::from(a).to_string().into_bytes())
                }
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

/// The bytes with trailing zeros put back up to `len` (never cut).
fn padded(b: &[u8], len: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(len.max(b.len()), 0);
    v
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
pub fn in_predicate(cols: &[KeyColumn], keys: &[&Key]) -> (String, Vec<Value>) {
    let mut params = Vec::with_capacity(keys.len() * cols.len());
    if cols.len() == 1 {
        let mark = cols[0].mark();
        let marks = vec![mark.as_str(); keys.len()].join(", ");
        for k in keys {
            params.push(cols[0].bind(&k[0]));
        }
        return (
            format!("({} IN ({marks}))", quote_ident(&cols[0].name)),
            params,
        );
    }
    let one = format!(
        "({})",
        cols.iter()
            .map(|c| format!("{} = {}", quote_ident(&c.name), c.mark()))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    for k in keys {
        params.extend(cols.iter().zip(k.iter()).map(|(c, v)| c.bind(v)));
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

/// `col <op> value` for one column. Over a short ENUM the comparison is an `IN` list of the
/// member indexes it covers, which the server reads as index ranges (a comparison it would
/// answer with a full index scan).
fn compare_one(col: &KeyColumn, op: &str, v: &KeyPart, params: &mut Vec<Value>) -> String {
    let q = quote_ident(&col.name);
    let n = col.enum_members();
    let index = match v {
        KeyPart::Int(i) => u64::try_from(*i).ok(),
        KeyPart::UInt(u) => Some(*u),
        _ => None,
    };
    if let (true, Some(i)) = (col.data_type == "enum" && n <= ENUM_IN_LIST_MAX, index) {
        // index 0 is the empty "error" member
        let (from, to) = match op {
            ">" => (i + 1, n as u64),
            ">=" => (i, n as u64),
            "<" => (0, i.saturating_sub(1)),
            "<=" => (0, i),
            _ => (i, i),
        };
        if (op == "<" && i == 0) || from > to {
            return "(1 = 0)".into();
        }
        let list: Vec<String> = (from..=to).map(|x| x.to_string()).collect();
        return format!("{q} IN ({})", list.join(", "));
    }
    params.push(col.bind(v));
    format!("{q} {op} {}", col.mark())
}

/// `cols <op> key` in lexicographic order, expanded for composite keys:
/// `(a > ?) OR (a = ? AND b > ?)`.
pub fn compare_predicate(cols: &[KeyColumn], op: Cmp, key: &Key) -> (String, Vec<Value>) {
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
            parts.push(compare_one(col, "=", &key[j], &mut params));
        }
        let op = if i + 1 == cols.len() { last } else { strict };
        parts.push(compare_one(&cols[i], op, &key[i], &mut params));
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (format!("({})", terms.join(" OR ")), params)
}

/// The range `lo < key <= hi` (either bound may be absent).
pub fn range_predicate(
    cols: &[KeyColumn],
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
        let ct = if unsigned {
            format!("{t} unsigned")
        } else {
            t.to_string()
        };
        KeyColumn::new("k", 0, &ct, None, None)
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
    fn binlog_images_become_values_the_column_compares_equal() {
        let v = |t: &str, val: Value| KeyPart::from_binlog_value(&val, &col(t, false)).unwrap();
        let b = |s: &str| Value::Bytes(s.into());
        // epoch seconds stay as they are: FROM_UNIXTIME reads them in any time zone
        assert_eq!(
            v("timestamp", b("1704164645.654321")),
            KeyPart::Bytes(b"1704164645.654321".to_vec())
        );
        assert_eq!(v("timestamp", b("0")), KeyPart::Bytes(b"0".to_vec()));
        assert!(KeyPart::from_binlog_value(&b("x"), &col("timestamp", false)).is_err());
        assert_eq!(
            v("set", Value::Bytes(vec![0x05, 0x01])),
            KeyPart::Int(0x0105)
        );
        assert_eq!(
            v("set", Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 0x80])),
            KeyPart::Int(i64::MIN)
        );
        assert_eq!(
            v("bit(10)", Value::Bytes(vec![0x02, 0x01])),
            KeyPart::UInt(0x0201)
        );
        assert_eq!(v("year", b("1900")), KeyPart::UInt(0));
        assert_eq!(v("year", b("2155")), KeyPart::UInt(2155));
        // BINARY(n) loses its trailing zero bytes in the image
        assert_eq!(
            v("binary(4)", Value::Bytes(vec![1])),
            KeyPart::Bytes(vec![1, 0, 0, 0])
        );
        assert_eq!(
            v("binary(4)", Value::Bytes(vec![])),
            KeyPart::Bytes(vec![0; 4])
        );
        assert_eq!(
            v("varbinary(4)", Value::Bytes(vec![1])),
            KeyPart::Bytes(vec![1])
        );
        let mut u = vec![0u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x16, 0x77];
        u.extend([0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(
            v("uuid", Value::Bytes(u)),
            KeyPart::Bytes(b"00112233-4455-1677-8899-aabbccddeeff".to_vec())
        );
        let mut six = vec![0u8; 10];
        six.extend([0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(
            v("inet6", Value::Bytes(six)),
            KeyPart::Bytes(b"::ffff:1.2.3.4".to_vec())
        );
        assert_eq!(
            v("inet4", Value::Bytes(vec![255, 0, 0, 1])),
            KeyPart::Bytes(b"255.0.0.1".to_vec())
        );
        assert_eq!(
            v("uuid", Value::Bytes(vec![1])),
            KeyPart::Bytes(b"01000000-0000-0000-0000-000000000000".to_vec())
        );
        assert_eq!(
            v("inet6", Value::Bytes(vec![])),
            KeyPart::Bytes(b"::".to_vec())
        );
        assert_eq!(
            v("inet4", Value::Bytes(vec![1, 2, 3])),
            KeyPart::Bytes(b"1.2.3.0".to_vec())
        );
        assert!(
            KeyPart::from_binlog_value(&Value::Bytes(vec![1; 17]), &col("uuid", false)).is_err()
        );
        assert!(KeyPart::from_binlog_value(&Value::NULL, &col("int", false)).is_err());
    }

    #[test]
    fn marks_bind_values_in_the_columns_own_charset_and_type() {
        let latin = KeyColumn::new(
            "k",
            0,
            "varchar(10)",
            Some("latin1"),
            Some("latin1_german1_ci"),
        );
        assert_eq!(
            latin.mark(),
            "CONVERT(UNHEX(?) USING latin1) COLLATE latin1_german1_ci"
        );
        assert_eq!(latin.read_expr(), "CAST(`k` AS BINARY)");
        let bin = KeyColumn::new("k", 0, "binary(16)", Some("binary"), None);
        assert_eq!(bin.mark(), "UNHEX(?)");
        assert_eq!(
            bin.bind(&KeyPart::Bytes(vec![0xf6, 0])),
            Value::Bytes(b"F600".to_vec())
        );
        assert_eq!(
            latin.bind(&KeyPart::Bytes(vec![0xf6])),
            Value::Bytes(b"F6".to_vec())
        );
        assert_eq!(bin.read_expr(), "`k`");
        assert_eq!(
            col("decimal(10,3)", false).mark(),
            "CAST(? AS DECIMAL(10,3))"
        );
        assert!(col("timestamp(3)", false).mark().contains("FROM_UNIXTIME"));
        assert_eq!(
            col("timestamp(3)", false).read_expr(),
            "UNIX_TIMESTAMP(`k`)"
        );
        assert_eq!(col("enum('a','b')", false).read_expr(), "`k` + 0");
        assert_eq!(col("int", false).mark(), "?");
        assert_eq!(col("enum('a','it''s','c)')", false).enum_members(), 3);
    }

    #[test]
    fn enum_ranges_are_lists_of_member_indexes() {
        let e = vec![col("enum('a','b','c')", false)];
        let k: Key = vec![KeyPart::Int(1)].into();
        assert_eq!(compare_predicate(&e, Cmp::Gt, &k).0, "((`k` IN (2, 3)))");
        assert_eq!(compare_predicate(&e, Cmp::Le, &k).0, "((`k` IN (0, 1)))");
        let top: Key = vec![KeyPart::Int(3)].into();
        assert_eq!(compare_predicate(&e, Cmp::Gt, &top).0, "(((1 = 0)))");
        let two = vec![col("enum('a','b','c')", false), col("int", false)];
        let k2: Key = vec![KeyPart::Int(2), KeyPart::Int(7)].into();
        let (sql, p) = compare_predicate(&two, Cmp::Gt, &k2);
        assert_eq!(sql, "((`k` IN (3)) OR (`k` IN (2) AND `k` > ?))");
        assert_eq!(p, vec![Value::Int(7)]);
    }

    #[test]
    fn predicates_bind_every_value_and_expand_composite_keys() {
        let one = vec![KeyColumn::new("id", 0, "int", None, None)];
        let k1: Key = vec![KeyPart::Int(1)].into();
        let k2: Key = vec![KeyPart::Int(2)].into();
        let (sql, p) = in_predicate(&one, &[&k1, &k2]);
        assert_eq!(sql, "(`id` IN (?, ?))");
        assert_eq!(p, vec![Value::Int(1), Value::Int(2)]);
        let two = vec![
            KeyColumn::new("a", 0, "int", None, None),
            KeyColumn::new("b`", 1, "varbinary(4)", Some("binary"), None),
        ];
        let c: Key = vec![KeyPart::Int(1), KeyPart::Bytes(b"x".to_vec())].into();
        let (sql, p) = in_predicate(&two, &[&c]);
        assert_eq!(sql, "((`a` = ? AND `b``` = UNHEX(?)))");
        assert_eq!(p.len(), 2);
        let (sql, p) = compare_predicate(&two, Cmp::Gt, &c);
        assert_eq!(sql, "((`a` > ?) OR (`a` = ? AND `b``` > UNHEX(?)))");
        assert_eq!(
            p,
            vec![Value::Int(1), Value::Int(1), Value::Bytes(b"78".to_vec())]
        );
        let (sql, _) = compare_predicate(&two, Cmp::Le, &c);
        assert_eq!(sql, "((`a` < ?) OR (`a` = ? AND `b``` <= UNHEX(?)))");
        let (sql, p) = range_predicate(&one, Some(&k1), Some(&k2));
        assert_eq!(sql, "(((`id` > ?)) AND ((`id` <= ?)))");
        assert_eq!(p, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(range_predicate(&one, None, None).0, "(1 = 1)");
        assert_eq!(display_key(&names(&two), &c), "(a=1, b`='x')");
    }
}
