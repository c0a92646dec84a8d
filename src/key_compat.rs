//! Whether a key names the same rows, in the same order, in the original and the ghost
//! (docs/design.md, fidelity rule 2).
//!
//! The copier, the checksum and the applier select rows of both tables with one predicate over
//! the key: a range `lo < key <= hi`, or `key IN (...)`. That means the same rows on both sides
//! only while every key column compares the same way in both: same type family, same charset
//! and collation, the same ENUM/SET member positions. An ALTER that changes one (a VARCHAR of
//! numbers to INT, `CONVERT TO CHARACTER SET`, a case-insensitive collation, a reordered ENUM)
//! makes a range delete the wrong ghost rows, and the checksum never converge. Such a key is
//! not used; when no key is left, the plan refuses and says why.
//!
//! Changes kept: integer to integer (compared by value), a VARCHAR/VARBINARY/CHAR length with
//! the same charset and collation, DECIMAL precision with the same scale, fractional seconds
//! widened, ENUM/SET members appended at the end.
//!
//! TIMESTAMP keys are bound as epoch seconds through `FROM_UNIXTIME`, which goes through the
//! session's time zone: exact at a fixed UTC offset, ambiguous for the repeated hour of a zone
//! with daylight saving. There the plan refuses a TIMESTAMP key.

use crate::inspect::{ColumnInfo, TableInfo};
use crate::key::{base_type, type_args, type_members};

/// A unique index the ALTER leaves as it is: the same columns, compared the same way, in both
/// tables. Since the original holds no two rows with the same value in it, a ghost row that
/// collides on it with a row being copied is stale: its own change is still on its way
/// through the binlog (see [`crate::resync`]'s eviction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedUnique {
    pub ghost_index: String,
    pub orig_cols: Vec<String>,
    pub ghost_cols: Vec<String>,
}

/// The ghost's unique indexes that the original has too, unchanged (full columns, no prefix).
/// `target_of` maps an original column to its name in the ghost.
pub fn shared_unique_indexes(
    original: &TableInfo,
    ghost: &TableInfo,
    target_of: impl Fn(&str) -> Option<String>,
) -> Vec<SharedUnique> {
    let mut out = Vec::new();
    for gi in ghost.indexes.iter().filter(|i| i.unique && !i.prefix) {
        let same = original.indexes.iter().find(|oi| {
            oi.unique
                && !oi.prefix
                && oi.columns.len() == gi.columns.len()
                && oi.columns.iter().zip(&gi.columns).all(|(o, g)| {
                    target_of(o).is_some_and(|t| t.eq_ignore_ascii_case(g))
                        && match (original.column(o), ghost.column(g)) {
                            (Some(oc), Some(gc)) => order_changed(oc, gc).is_none(),
                            _ => false,
                        }
                })
        });
        if let Some(oi) = same {
            out.push(SharedUnique {
                ghost_index: gi.name.clone(),
                orig_cols: oi.columns.clone(),
                ghost_cols: gi.columns.clone(),
            });
        }
    }
    out
}

/// Why a change to a key column makes it unusable as a shared key; `None` when the column
/// compares the same way in both tables.
pub fn order_changed(orig: &ColumnInfo, ghost: &ColumnInfo) -> Option<String> {
    let (ot, gt) = (
        orig.column_type.to_ascii_lowercase(),
        ghost.column_type.to_ascii_lowercase(),
    );
    let same_text = orig.charset == ghost.charset && orig.collation == ghost.collation;
    if ot == gt && same_text {
        return None;
    }
    let (ob, gb) = (base_type(&ot), base_type(&gt));
    let kept = match (ob, gb) {
        _ if is_integer(ob) && is_integer(gb) => true,
        ("varchar", "varchar") | ("varbinary", "varbinary") | ("char", "char") => same_text,
        ("decimal", "decimal") => type_args(&ot).get(1) == type_args(&gt).get(1),
        ("datetime", "datetime") | ("time", "time") | ("timestamp", "timestamp") => {
            fraction(&ot) <= fraction(&gt)
        }
        ("enum", "enum") | ("set", "set") => {
            same_text && gt_members_extend(&type_members(&ot), &type_members(&gt))
        }
        _ => false,
    };
    if kept {
        return None;
    }
    let show = |t: &str, c: &ColumnInfo| match &c.collation {
        Some(coll) => format!("{t} COLLATE {coll}"),
        None => t.to_string(),
    };
    Some(format!(
        "`{}` changes from {} to {}",
        orig.name,
        show(&ot, orig),
        show(&gt, ghost)
    ))
}

/// Whether a session in this time zone reads every TIMESTAMP as exactly one local time: a
/// fixed offset, or UTC. `time_zone` is `@@time_zone`, `system` is `@@system_time_zone`.
pub fn fixed_offset_zone(time_zone: &str, system: &str) -> bool {
    let utc = |z: &str| {
        matches!(
            z.to_ascii_uppercase().as_str(),
            "UTC" | "GMT" | "ETC/UTC" | "ETC/GMT" | "UNIVERSAL" | "ZULU" | "+00:00"
        )
    };
    let offset = |z: &str| {
        let b = z.as_bytes();
        b.len() == 6
            && (b[0] == b'+' || b[0] == b'-')
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b[3] == b':'
            && b[4..].iter().all(u8::is_ascii_digit)
    };
    if time_zone.eq_ignore_ascii_case("SYSTEM") {
        utc(system)
    } else {
        utc(time_zone) || offset(time_zone)
    }
}

fn is_integer(t: &str) -> bool {
    matches!(
        t,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
    )
}

fn fraction(t: &str) -> u32 {
    type_args(t).first().copied().unwrap_or(0)
}

/// The new member list starts with the old one: every old member keeps its position.
fn gt_members_extend(old: &[String], new: &[String]) -> bool {
    new.len() >= old.len() && old.iter().zip(new).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: &str, cs: Option<&str>, coll: Option<&str>) -> ColumnInfo {
        ColumnInfo {
            name: "k".into(),
            column_type: t.into(),
            charset: cs.map(str::to_string),
            collation: coll.map(str::to_string),
            nullable: false,
            generated: false,
            implicit_default: None,
        }
    }

    #[test]
    fn changes_that_keep_the_order_are_allowed() {
        let int = col("int(11)", None, None);
        assert_eq!(
            order_changed(&int, &col("bigint(20) unsigned", None, None)),
            None
        );
        let v = |n, cs, coll| col(&format!("varchar({n})"), Some(cs), Some(coll));
        let latin = v(10, "latin1", "latin1_swedish_ci");
        assert_eq!(
            order_changed(&latin, &v(20, "latin1", "latin1_swedish_ci")),
            None
        );
        let e = |t: &str| col(t, Some("utf8mb4"), Some("utf8mb4_general_ci"));
        assert_eq!(
            order_changed(&e("enum('a','b')"), &e("enum('a','b','c')")),
            None
        );
        assert_eq!(
            order_changed(
                &col("datetime", None, None),
                &col("datetime(3)", None, None)
            ),
            None
        );
        assert_eq!(
            order_changed(
                &col("decimal(10,2)", None, None),
                &col("decimal(12,2)", None, None)
            ),
            None
        );
    }

    #[test]
    fn changes_of_type_charset_collation_or_member_order_are_named() {
        let v = |cs: &str, coll: &str| col("varchar(10)", Some(cs), Some(coll));
        assert_eq!(
            order_changed(&v("latin1", "latin1_swedish_ci"), &v("utf8mb4", "utf8mb4_general_ci"))
                .as_deref(),
            Some("`k` changes from varchar(10) COLLATE latin1_swedish_ci to varchar(10) COLLATE utf8mb4_general_ci")
        );
        assert!(order_changed(
            &v("utf8mb4", "utf8mb4_bin"),
            &v("utf8mb4", "utf8mb4_unicode_ci")
        )
        .is_some());
        assert!(order_changed(&v("utf8mb4", "utf8mb4_bin"), &col("int(11)", None, None)).is_some());
        let e = |t: &str| col(t, Some("utf8mb4"), Some("utf8mb4_general_ci"));
        assert!(order_changed(&e("enum('a','b')"), &e("enum('b','a')")).is_some());
        assert!(order_changed(&e("enum('a','b')"), &e("enum('x','a','b')")).is_some());
        assert!(
            order_changed(&col("datetime", None, None), &col("timestamp", None, None)).is_some()
        );
        assert!(order_changed(
            &col("binary(16)", None, None),
            &col("binary(20)", None, None)
        )
        .is_some());
        assert!(order_changed(
            &col("decimal(10,2)", None, None),
            &col("decimal(10,3)", None, None)
        )
        .is_some());
        assert_eq!(
            type_members("enum('a','it''s','c,d')"),
            vec!["a", "it's", "c,d"]
        );
    }

    #[test]
    fn only_fixed_offsets_and_utc_read_timestamps_unambiguously() {
        assert!(fixed_offset_zone("+05:00", "CET"));
        assert!(fixed_offset_zone("-03:30", ""));
        assert!(fixed_offset_zone("SYSTEM", "UTC"));
        assert!(fixed_offset_zone("UTC", ""));
        assert!(!fixed_offset_zone("SYSTEM", "CET"));
        assert!(!fixed_offset_zone("Europe/Berlin", "UTC"));
        assert!(!fixed_offset_zone("+5:00", "UTC"));
    }
}
