//! Understanding `--alter`: just enough of an ALTER TABLE body to know which columns are
//! renamed, dropped or added, to refuse what cannot be done online, and to name the helper
//! tables.
//!
//! The server is the real judge of the ALTER: `plan` applies it to an empty clone of the table,
//! and the clone's columns and keys are what the migration uses. This module never tries to
//! re-implement MySQL's grammar; it reads the clause heads (split at top-level commas) and the
//! column names they carry, which is what the column mapping needs.
//!
//! Invariant for helper names: every helper table name **starts with the original table name**,
//! so it sorts after it. The MariaDB cut-over relies on that (DESIGN.md, "Table names").

use std::collections::HashMap;

/// MySQL's limit on identifier length, in characters.
pub const MAX_IDENT_CHARS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DdlError {
    #[error("--alter is empty: give the body of an ALTER TABLE, e.g. --alter \"ADD COLUMN note TEXT NULL\"")]
    Empty,
    #[error("could not read --alter: {0}")]
    Unreadable(String),
    #[error("--alter holds more than one statement; give the body of a single ALTER TABLE")]
    MultipleStatements,
    #[error("--alter names table `{named}` but --table is `{table}`; give only the body of the ALTER (what follows ALTER TABLE {table})")]
    OtherTable { named: String, table: String },
    #[error("ALTER IGNORE silently drops rows that violate a new unique key, and zdm-ost never drops rows. Remove IGNORE (and remove the duplicate rows first, if the new key needs it)")]
    Ignore,
    #[error("`{0}` renames the table, which is not a change zdm-ost copies a table for: use RENAME TABLE directly (it is atomic and instant)")]
    RenameTable(String),
    #[error("partition clauses are not supported yet (`{0}`): run partition maintenance natively (most of it is online), or repartition in a separate change")]
    Partition(String),
    #[error("adding a foreign key is refused (`{0}`): zdm-ost migrates by copying into a new table and renaming, and a foreign key would be checked against, and keep pointing at, the wrong table. Add it natively after the migration")]
    ForeignKey(String),
    #[error(
        "`{0}`: zdm-ost decides how the table is changed; remove ALGORITHM=/LOCK= from --alter"
    )]
    AlgorithmOrLock(String),
    #[error("`{0}`: tablespace operations are not schema changes zdm-ost can copy for; run them natively")]
    Tablespace(String),
    #[error("`{0}` holds an executable comment (/*! ... */ or /*M! ... */): the server runs its text as part of the ALTER, and zdm-ost would read the ALTER without it. Write those clauses plainly")]
    ExecutableComment(String),
    #[error("`{0}`: zdm-ost keeps the table on InnoDB (it needs row locks and transactions to copy safely); only ENGINE=InnoDB is accepted")]
    Engine(String),
    #[error("table name `{table}` is too long: the helper table `{helper}` would have {chars} characters, over MySQL's limit of 64. Rename the table first, or migrate natively")]
    NameTooLong {
        table: String,
        helper: String,
        chars: usize,
    },
}

/// The helper tables of one migration. Every name starts with the original name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableNames {
    pub original: String,
    pub ghost: String,
    pub old: String,
    pub changelog: String,
    pub checkpoint: String,
    pub probe: String,
}

impl TableNames {
    pub fn new(table: &str) -> Result<TableNames, DdlError> {
        let mk = |suffix: &str| -> Result<String, DdlError> {
            let name = format!("{table}{suffix}");
            let chars = name.chars().count();
            if chars > MAX_IDENT_CHARS {
                return Err(DdlError::NameTooLong {
                    table: table.to_string(),
                    helper: name,
                    chars,
                });
            }
            Ok(name)
        };
        Ok(TableNames {
            original: table.to_string(),
            ghost: mk("_zdm_gho")?,
            old: mk("_zdm_old")?,
            changelog: mk("_zdm_log")?,
            checkpoint: mk("_zdm_ckp")?,
            probe: mk("_zdm_prb")?,
        })
    }
}

/// What zdm-ost understood of `--alter`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AlterSpec {
    /// The body to put after `ALTER TABLE <name>` (a leading `ALTER TABLE t` and trailing `;`
    /// removed).
    pub body: String,
    /// Column renames, old name -> new name (CHANGE and RENAME COLUMN).
    pub renames: Vec<(String, String)>,
    /// Columns dropped by name.
    pub dropped: Vec<String>,
    /// Columns added by name (when the clause names them one at a time).
    pub added: Vec<String>,
    /// Does the ALTER drop the primary key?
    pub drops_primary_key: bool,
    /// The table option `AUTO_INCREMENT = n`: the new table's counter (the server raises it
    /// past the largest id, as for a native ALTER).
    pub auto_increment: Option<u64>,
}

/// A token of MySQL's SQL text: words, backquoted names (unquoted), string and number
/// literals, punctuation. Comments are skipped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Word(String),
    Quoted(String),
    Str,
    Num,
    Punct(char),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) fn tokenize(s: &str) -> Result<Vec<Token>, DdlError> {
    tokenize_with(s, false, false)
}

/// [`tokenize`] under a statement's sql_mode: with `ansi_quotes` a `"..."` is a name, with
/// `no_backslash_escapes` a backslash inside a string is an ordinary character.
pub(crate) fn tokenize_with(
    s: &str,
    ansi_quotes: bool,
    no_backslash_escapes: bool,
) -> Result<Vec<Token>, DdlError> {
    let b: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| b.get(i).map(|&(_, c)| c);
    let off = |i: usize| b.get(i).map(|&(o, _)| o).unwrap_or(s.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i].1;
        let start = off(i);
        if c.is_whitespace() {
            i += 1;
        } else if c == '#'
            || (c == '-' && at(i + 1) == Some('-') && at(i + 2).is_none_or(char::is_whitespace))
        {
            while i < b.len() && b[i].1 != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            i += 2;
            loop {
                match at(i) {
                    None => return Err(DdlError::Unreadable("unterminated /* comment".into())),
                    Some('*') if at(i + 1) == Some('/') => {
                        i += 2;
                        break;
                    }
                    _ => i += 1,
                }
            }
        } else if c == '`' || c == '"' || c == '\'' {
            let q = c;
            let mut val = String::new();
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(DdlError::Unreadable(format!(
                            "unterminated {q} quote starting at character {}",
                            start + 1
                        )))
                    }
                    Some('\\') if q != '`' && !no_backslash_escapes => {
                        if let Some(n) = at(i + 1) {
                            val.push(n);
                        }
                        i += 2;
                    }
                    Some(x) if x == q => {
                        if at(i + 1) == Some(q) {
                            val.push(q);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(x) => {
                        val.push(x);
                        i += 1;
                    }
                }
            }
            let tok = if q == '`' || (q == '"' && ansi_quotes) {
                Tok::Quoted(val)
            } else {
                Tok::Str
            };
            out.push(Token {
                tok,
                start,
                end: off(i),
            });
        } else if c.is_alphanumeric() || c == '_' || c == '$' || c == '@' {
            let mut w = String::new();
            while let Some(x) = at(i) {
                if x.is_alphanumeric()
                    || x == '_'
                    || x == '$'
                    || x == '@'
                    || x == '.' && w.chars().all(|d| d.is_ascii_digit())
                {
                    w.push(x);
                    i += 1;
                } else {
                    break;
                }
            }
            let tok = if w.chars().next().is_some_and(|d| d.is_ascii_digit())
                && w.chars().all(|d| d.is_ascii_digit() || d == '.')
            {
                Tok::Num
            } else {
                Tok::Word(w)
            };
            out.push(Token {
                tok,
                start,
                end: off(i),
            });
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                start,
                end: off(i + 1),
            });
            i += 1;
        }
    }
    Ok(out)
}

/// The statement with its executable comments turned into the code they hold, as the server
/// runs them (version numbers dropped: a server new enough to write them runs them). Ordinary
/// comments are kept as they are, quotes inside them included (a `'` in `/* ' */` starts no
/// string); a backslash escapes inside strings unless `no_backslash_escapes`.
pub fn executable_comments_as_code(sql: &str, no_backslash_escapes: bool) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut i, mut in_exec) = (0, false);
    let mut copied = 0;
    let flush = |out: &mut String, from: usize, to: usize| out.push_str(&sql[from..to]);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' && !no_backslash_escapes {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'/' if sql[i..].starts_with("/*!") || sql[i..].starts_with("/*M!") => {
                flush(&mut out, copied, i);
                out.push(' ');
                i += if sql[i..].starts_with("/*!") { 3 } else { 4 };
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                copied = i;
                in_exec = true;
            }
            b'/' if sql[i..].starts_with("/*") => {
                // an ordinary comment: copied as it is, to its end
                i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            }
            b'*' if in_exec && sql[i..].starts_with("*/") => {
                flush(&mut out, copied, i);
                out.push(' ');
                i += 2;
                copied = i;
                in_exec = false;
            }
            b'#' => i = sql[i..].find('\n').map_or(b.len(), |e| i + e),
            b'-' if sql[i..].starts_with("-- ") || sql[i..].starts_with("--\t") => {
                i = sql[i..].find('\n').map_or(b.len(), |e| i + e)
            }
            _ => i += 1,
        }
    }
    flush(&mut out, copied, b.len());
    out
}

pub(crate) fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(kw))
}

pub(crate) fn ident(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token {
            tok: Tok::Word(w), ..
        })
        | Some(Token {
            tok: Tok::Quoted(w),
            ..
        }) => Some(w.clone()),
        _ => None,
    }
}

/// Parses the body of an ALTER TABLE for `table`.
pub fn parse_alter(alter: &str, table: &str) -> Result<AlterSpec, DdlError> {
    let text = alter.trim();
    // the server runs an executable comment's text, which zdm-ost would read past (and the body
    // it sends would drop one at either end)
    if executable_comments_as_code(text, false) != text {
        return Err(DdlError::ExecutableComment(text.to_string()));
    }
    let mut toks = tokenize(text)?;
    // Trailing semicolons are fine; one in the middle means several statements.
    while matches!(
        toks.last(),
        Some(Token {
            tok: Tok::Punct(';'),
            ..
        })
    ) {
        toks.pop();
    }
    if toks.iter().any(|t| t.tok == Tok::Punct(';')) {
        return Err(DdlError::MultipleStatements);
    }
    // An optional leading `ALTER [ONLINE] [IGNORE] TABLE name`.
    let mut i = 0;
    if is_kw(toks.first(), "ALTER") && !is_kw(toks.get(1), "COLUMN") {
        let mut j = 1;
        while is_kw(toks.get(j), "ONLINE")
            || is_kw(toks.get(j), "OFFLINE")
            || is_kw(toks.get(j), "IGNORE")
        {
            if is_kw(toks.get(j), "IGNORE") {
                return Err(DdlError::Ignore);
            }
            j += 1;
        }
        if is_kw(toks.get(j), "TABLE") {
            j += 1;
            let mut named = ident(toks.get(j)).unwrap_or_default();
            j += 1;
            if toks.get(j).map(|t| &t.tok) == Some(&Tok::Punct('.')) {
                named = ident(toks.get(j + 1)).unwrap_or_default();
                j += 2;
            }
            if named != table {
                return Err(DdlError::OtherTable {
                    named,
                    table: table.to_string(),
                });
            }
            i = j;
        }
    }
    let toks = &toks[i..];
    if toks.is_empty() {
        return Err(DdlError::Empty);
    }
    let body_start = toks[0].start;
    let body_end = toks.last().map(|t| t.end).unwrap_or(body_start);
    let mut spec = AlterSpec {
        body: text[body_start..body_end].to_string(),
        ..Default::default()
    };

    // Split at top-level commas.
    let mut clauses: Vec<&[Token]> = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (k, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                clauses.push(&toks[from..k]);
                from = k + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(DdlError::Unreadable("unbalanced parentheses".into()));
        }
    }
    if depth != 0 {
        return Err(DdlError::Unreadable("unbalanced parentheses".into()));
    }
    clauses.push(&toks[from..]);
    for c in clauses {
        if c.is_empty() {
            return Err(DdlError::Unreadable(
                "an empty clause between commas".into(),
            ));
        }
        let src = &text[c[0].start..c[c.len() - 1].end];
        parse_clause(c, src, &mut spec)?;
    }
    Ok(spec)
}

fn parse_clause(c: &[Token], src: &str, spec: &mut AlterSpec) -> Result<(), DdlError> {
    let src_s = src.to_string();
    // Top-level words anywhere in the clause that mark partitioning or algorithm choices.
    let mut depth = 0;
    for (k, t) in c.iter().enumerate() {
        match &t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Word(w) if depth == 0 => {
                let next = c.get(k + 1);
                if (w.eq_ignore_ascii_case("PARTITION") && is_kw(next, "BY"))
                    || w.eq_ignore_ascii_case("PARTITIONING")
                {
                    return Err(DdlError::Partition(src_s));
                }
                if (w.eq_ignore_ascii_case("ALGORITHM") || w.eq_ignore_ascii_case("LOCK"))
                    && matches!(
                        next.map(|t| &t.tok),
                        Some(Tok::Punct('=')) | Some(Tok::Word(_))
                    )
                    && k == 0
                {
                    return Err(DdlError::AlgorithmOrLock(src_s));
                }
                // the table option, not a column named `engine` (`ADD COLUMN engine ...`)
                let is_option = matches!(next.map(|t| &t.tok), Some(Tok::Punct('=')))
                    || (k == 0 && matches!(next.map(|t| &t.tok), Some(Tok::Word(_))));
                if w.eq_ignore_ascii_case("ENGINE") && is_option {
                    let v = if matches!(next.map(|t| &t.tok), Some(Tok::Punct('='))) {
                        c.get(k + 2)
                    } else {
                        next
                    };
                    let engine = ident(v).unwrap_or_default();
                    if !engine.eq_ignore_ascii_case("InnoDB") {
                        return Err(DdlError::Engine(src_s));
                    }
                }
                if w.eq_ignore_ascii_case("AUTO_INCREMENT") && is_option {
                    let v = if matches!(next.map(|t| &t.tok), Some(Tok::Punct('='))) {
                        c.get(k + 2)
                    } else {
                        next
                    };
                    if let Some(Token {
                        tok: Tok::Num,
                        start,
                        end,
                    }) = v
                    {
                        // token offsets count from the whole ALTER's text, `src` from the clause's
                        let base = c[0].start;
                        spec.auto_increment = src
                            .get(start - base..end - base)
                            .and_then(|n| n.parse().ok());
                    }
                }
            }
            _ => {}
        }
    }
    let head = match &c[0].tok {
        Tok::Word(w) => w.to_ascii_uppercase(),
        _ => return Ok(()),
    };
    let mut k = 1;
    let skip = |k: &mut usize, kws: &[&str]| {
        for kw in kws {
            if is_kw(c.get(*k), kw) {
                *k += 1;
            } else {
                return false;
            }
        }
        true
    };
    match head.as_str() {
        "ADD" => {
            skip(&mut k, &["COLUMN"]);
            skip(&mut k, &["IF", "NOT", "EXISTS"]);
            if is_kw(c.get(k), "CONSTRAINT") {
                k += 1;
                if !is_kw(c.get(k), "FOREIGN")
                    && !is_kw(c.get(k), "UNIQUE")
                    && !is_kw(c.get(k), "PRIMARY")
                    && !is_kw(c.get(k), "CHECK")
                {
                    k += 1; // the constraint's symbol
                }
            }
            if is_kw(c.get(k), "FOREIGN") {
                return Err(DdlError::ForeignKey(src_s));
            }
            if is_kw(c.get(k), "PARTITION") {
                return Err(DdlError::Partition(src_s));
            }
            let index_words = [
                "INDEX", "KEY", "UNIQUE", "FULLTEXT", "SPATIAL", "PRIMARY", "CHECK", "PERIOD",
                "SYSTEM", "VECTOR",
            ];
            if index_words.iter().any(|w| is_kw(c.get(k), w)) {
                return Ok(());
            }
            if matches!(c.get(k).map(|t| &t.tok), Some(Tok::Punct('('))) {
                // ADD (a INT, b INT): names are read back from the server's clone.
                return Ok(());
            }
            if let Some(name) = ident(c.get(k)) {
                spec.added.push(name);
            }
        }
        "DROP" => {
            if is_kw(c.get(k), "PRIMARY") {
                spec.drops_primary_key = true;
                return Ok(());
            }
            if is_kw(c.get(k), "PARTITION") {
                return Err(DdlError::Partition(src_s));
            }
            let other = [
                "INDEX",
                "KEY",
                "FOREIGN",
                "CONSTRAINT",
                "CHECK",
                "PERIOD",
                "SYSTEM",
            ];
            if other.iter().any(|w| is_kw(c.get(k), w)) {
                return Ok(());
            }
            skip(&mut k, &["COLUMN"]);
            skip(&mut k, &["IF", "EXISTS"]);
            if let Some(name) = ident(c.get(k)) {
                spec.dropped.push(name);
            }
        }
        "CHANGE" => {
            skip(&mut k, &["COLUMN"]);
            skip(&mut k, &["IF", "EXISTS"]);
            if let (Some(old), Some(new)) = (ident(c.get(k)), ident(c.get(k + 1))) {
                if old != new {
                    spec.renames.push((old, new));
                }
            }
        }
        "RENAME" => {
            if is_kw(c.get(k), "COLUMN") {
                k += 1;
                skip(&mut k, &["IF", "EXISTS"]);
                if let (Some(old), true, Some(new)) = (
                    ident(c.get(k)),
                    is_kw(c.get(k + 1), "TO"),
                    ident(c.get(k + 2)),
                ) {
                    spec.renames.push((old, new));
                }
            } else if is_kw(c.get(k), "INDEX") || is_kw(c.get(k), "KEY") {
                // renaming an index is a change the clone takes as is
            } else {
                return Err(DdlError::RenameTable(src_s));
            }
        }
        "PARTITION" | "COALESCE" | "REORGANIZE" | "EXCHANGE" | "TRUNCATE" | "REMOVE"
        | "ANALYZE" | "CHECK" | "OPTIMIZE" | "REBUILD" | "REPAIR" => {
            return Err(DdlError::Partition(src_s));
        }
        "DISCARD" | "IMPORT" => return Err(DdlError::Tablespace(src_s)),
        "ALGORITHM" | "LOCK" => return Err(DdlError::AlgorithmOrLock(src_s)),
        _ => {}
    }
    Ok(())
}

/// Does this statement (from a binlog QUERY event, run with default schema `schema`) name
/// the table `db`.`table`? Names compare exactly (table names are case-sensitive on Linux);
/// a statement that cannot be read counts as naming it (the safe answer).
pub fn statement_names_table(sql: &str, schema: &str, db: &str, table: &str) -> bool {
    let Ok(toks) = tokenize(sql) else {
        return true;
    };
    for (i, t) in toks.iter().enumerate() {
        let name = match &t.tok {
            Tok::Word(w) | Tok::Quoted(w) => w,
            _ => continue,
        };
        if name != table {
            continue;
        }
        let qualified = i >= 2 && toks[i - 1].tok == Tok::Punct('.');
        let in_db = if qualified {
            ident(toks.get(i - 2)).as_deref() == Some(db)
        } else {
            schema == db
        };
        // `x.table` where x is a column's table alias is not a table name; `db.table.col` is.
        if in_db {
            return true;
        }
    }
    false
}

/// One column of the new table and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MappedColumn {
    /// The column's name in the new table.
    pub target: String,
    /// The original table's column it is copied from; `None` for a new column (it takes its
    /// default).
    pub source: Option<String>,
}

/// Maps the new table's (non-generated) columns to the original's.
///
/// A new column takes its value from the column renamed into it; else from the original
/// column of the same name, unless that one was dropped or renamed away (then it is a new
/// column that merely reuses the name). Names compare case-insensitively, as MySQL's do.
pub fn column_mapping(
    old_cols: &[String],
    new_cols: &[String],
    spec: &AlterSpec,
) -> Vec<MappedColumn> {
    let lc = |s: &str| s.to_lowercase();
    // `CHANGE COLUMN IF EXISTS a b` / `RENAME COLUMN IF EXISTS a TO b` of a column the table
    // does not have changes nothing, as on the server (without IF EXISTS the server refuses it)
    let has = |c: &str| old_cols.iter().any(|o| lc(o) == lc(c));
    let renames: Vec<&(String, String)> = spec.renames.iter().filter(|(o, _)| has(o)).collect();
    let renamed_into: HashMap<String, String> =
        renames.iter().map(|(o, n)| (lc(n), o.clone())).collect();
    let renamed_away: Vec<String> = renames.iter().map(|(o, _)| lc(o)).collect();
    let dropped: Vec<String> = spec.dropped.iter().map(|d| lc(d)).collect();
    let old_by_lc: HashMap<String, &String> = old_cols.iter().map(|c| (lc(c), c)).collect();
    new_cols
        .iter()
        .map(|n| {
            let key = lc(n);
            let source = if let Some(o) = renamed_into.get(&key) {
                old_by_lc.get(&lc(o)).map(|s| (*s).clone())
            } else if !dropped.contains(&key) && !renamed_away.contains(&key) {
                old_by_lc.get(&key).map(|s| (*s).clone())
            } else {
                None
            };
            MappedColumn {
                target: n.clone(),
                source,
            }
        })
        .collect()
}

/// New columns that have the name of an original column but take no value from it, where the
/// ALTER neither drops that column nor renames it away: a sign that zdm-ost misread the ALTER,
/// which would empty the column in every row. The plan refuses them.
pub fn unmapped_namesakes(
    mapping: &[MappedColumn],
    old_cols: &[String],
    spec: &AlterSpec,
) -> Vec<String> {
    let lc = |s: &str| s.to_lowercase();
    let gone: Vec<String> = spec
        .dropped
        .iter()
        .chain(spec.renames.iter().map(|(o, _)| o))
        .map(|c| lc(c))
        .collect();
    mapping
        .iter()
        .filter(|m| m.source.is_none())
        .filter(|m| old_cols.iter().any(|o| lc(o) == lc(&m.target)))
        .filter(|m| !gone.contains(&lc(&m.target)))
        .map(|m| m.target.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_if_exists_of_a_missing_column_changes_nothing() {
        let old = cols(&["id", "full_name"]);
        let spec = parse_alter(
            "CHANGE COLUMN IF EXISTS name full_name VARCHAR(100), RENAME COLUMN IF EXISTS gone TO id",
            "t",
        )
        .unwrap();
        let m = column_mapping(&old, &old, &spec);
        assert!(
            m.iter()
                .all(|c| c.source.as_deref() == Some(c.target.as_str())),
            "{m:?}"
        );
        assert!(unmapped_namesakes(&m, &old, &spec).is_empty());
        // a misread mapping that would empty an existing column is caught
        let wrong = vec![MappedColumn {
            target: "full_name".into(),
            source: None,
        }];
        assert_eq!(
            unmapped_namesakes(&wrong, &old, &spec),
            cols(&["full_name"])
        );
        // dropping and adding a column of the same name is meant
        let readd = parse_alter("DROP COLUMN full_name, ADD COLUMN full_name INT", "t").unwrap();
        assert!(unmapped_namesakes(&wrong, &old, &readd).is_empty());
    }

    #[test]
    fn executable_comments_in_the_alter_are_refused() {
        let e = parse_alter(
            "ADD COLUMN note INT NULL /*!50000 , CHANGE b b2 VARCHAR(20) */",
            "t",
        );
        assert!(matches!(e, Err(DdlError::ExecutableComment(_))), "{e:?}");
        assert!(parse_alter("ADD COLUMN note INT NULL /* a comment */", "t").is_ok());
    }

    #[test]
    fn a_column_named_engine_and_the_auto_increment_option_are_read_as_meant() {
        let s = parse_alter(
            "ADD COLUMN engine VARCHAR(10) NULL, CHANGE engine2 engine3 INT",
            "t",
        )
        .unwrap();
        assert_eq!(s.added, cols(&["engine"]));
        assert!(matches!(
            parse_alter("ADD COLUMN x INT, ENGINE = MyISAM", "t"),
            Err(DdlError::Engine(_))
        ));
        assert!(matches!(
            parse_alter("ENGINE MyISAM", "t"),
            Err(DdlError::Engine(_))
        ));
        let s = parse_alter("ADD COLUMN n INT, AUTO_INCREMENT = 1000000", "t").unwrap();
        assert_eq!(s.auto_increment, Some(1_000_000));
        let s = parse_alter("MODIFY id BIGINT NOT NULL AUTO_INCREMENT", "t").unwrap();
        assert_eq!(s.auto_increment, None);
    }

    fn cols(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clauses_joined_by_commas_are_each_understood() {
        let s = parse_alter(
            "ADD COLUMN note TEXT NULL, DROP COLUMN `old col`, MODIFY qty BIGINT NOT NULL DEFAULT 0, \
             CHANGE `name` full_name VARCHAR(100) COMMENT 'a, b (c)', RENAME COLUMN x TO y, \
             ADD INDEX idx_a (a, b), DROP INDEX idx_c, ADD UNIQUE KEY u (z), ENGINE=InnoDB, \
             CONVERT TO CHARACTER SET utf8mb4",
            "t",
        )
        .unwrap();
        assert_eq!(s.added, cols(&["note"]));
        assert_eq!(s.dropped, cols(&["old col"]));
        assert_eq!(
            s.renames,
            vec![
                ("name".to_string(), "full_name".to_string()),
                ("x".to_string(), "y".to_string())
            ]
        );
        assert!(!s.drops_primary_key);
    }

    #[test]
    fn leading_alter_table_and_semicolon_are_stripped() {
        let s = parse_alter("ALTER TABLE orders ADD COLUMN a INT;", "orders").unwrap();
        assert_eq!(s.body, "ADD COLUMN a INT");
        let s = parse_alter(
            "alter table `app`.`orders` drop primary key, add primary key (id, b)",
            "orders",
        )
        .unwrap();
        assert!(s.drops_primary_key);
        assert_eq!(
            parse_alter("ALTER TABLE other ADD COLUMN a INT", "orders").unwrap_err(),
            DdlError::OtherTable {
                named: "other".into(),
                table: "orders".into()
            }
        );
    }

    #[test]
    fn what_cannot_be_done_online_is_refused_with_the_reason() {
        let e = |a: &str| parse_alter(a, "t").unwrap_err();
        assert_eq!(
            e("RENAME TO t2"),
            DdlError::RenameTable("RENAME TO t2".into())
        );
        assert_eq!(
            e("ADD COLUMN a INT, RENAME AS t2"),
            DdlError::RenameTable("RENAME AS t2".into())
        );
        assert!(matches!(
            e("PARTITION BY HASH(id) PARTITIONS 4"),
            DdlError::Partition(_)
        ));
        assert!(matches!(
            e("ADD COLUMN a INT PARTITION BY HASH(id)"),
            DdlError::Partition(_)
        ));
        assert!(matches!(e("REMOVE PARTITIONING"), DdlError::Partition(_)));
        assert!(matches!(e("DROP PARTITION p1"), DdlError::Partition(_)));
        assert!(matches!(
            e("ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES p(id)"),
            DdlError::ForeignKey(_)
        ));
        assert!(matches!(
            e("ADD COLUMN a INT, ALGORITHM=INPLACE"),
            DdlError::AlgorithmOrLock(_)
        ));
        assert!(matches!(
            e("ADD COLUMN a INT, LOCK=NONE"),
            DdlError::AlgorithmOrLock(_)
        ));
        assert!(matches!(e("ENGINE=MyISAM"), DdlError::Engine(_)));
        assert_eq!(e("ALTER IGNORE TABLE t ADD UNIQUE (a)"), DdlError::Ignore);
        assert_eq!(e("   "), DdlError::Empty);
        assert_eq!(
            e("ADD COLUMN a INT; DROP TABLE t"),
            DdlError::MultipleStatements
        );
        assert!(matches!(
            e("ADD COLUMN a VARCHAR(10) DEFAULT 'x"),
            DdlError::Unreadable(_)
        ));
        assert!(matches!(e("ADD INDEX (a"), DdlError::Unreadable(_)));
        assert!(matches!(e("DISCARD TABLESPACE"), DdlError::Tablespace(_)));
    }

    #[test]
    fn column_mapping_follows_renames_drops_and_reused_names() {
        let old = cols(&["id", "name", "qty", "gone"]);
        let spec = parse_alter(
            "CHANGE name full_name VARCHAR(50), DROP COLUMN gone, ADD COLUMN note TEXT",
            "t",
        )
        .unwrap();
        let new = cols(&["id", "full_name", "qty", "note"]);
        let m = column_mapping(&old, &new, &spec);
        let got: Vec<(String, Option<String>)> =
            m.into_iter().map(|c| (c.target, c.source)).collect();
        assert_eq!(
            got,
            vec![
                ("id".into(), Some("id".into())),
                ("full_name".into(), Some("name".into())),
                ("qty".into(), Some("qty".into())),
                ("note".into(), None),
            ]
        );
        // dropping a column and adding one of the same name makes a new, empty column
        let spec = parse_alter("DROP COLUMN qty, ADD COLUMN qty INT", "t").unwrap();
        let m = column_mapping(&old, &cols(&["id", "name", "gone", "qty"]), &spec);
        assert_eq!(m[3].source, None);
        // swapping two names through renames
        let spec =
            parse_alter("RENAME COLUMN name TO qty, RENAME COLUMN qty TO name", "t").unwrap();
        let m = column_mapping(&old, &cols(&["id", "qty", "name", "gone"]), &spec);
        assert_eq!(m[1].source.as_deref(), Some("name"));
        assert_eq!(m[2].source.as_deref(), Some("qty"));
        // names compare case-insensitively
        let spec = parse_alter("CHANGE NAME Title VARCHAR(9)", "t").unwrap();
        let m = column_mapping(&old, &cols(&["ID", "title"]), &spec);
        assert_eq!(m[0].source.as_deref(), Some("id"));
        assert_eq!(m[1].source.as_deref(), Some("name"));
    }

    #[test]
    fn statements_naming_the_table_are_recognised() {
        assert!(statement_names_table(
            "ALTER TABLE orders ADD x INT",
            "app",
            "app",
            "orders"
        ));
        assert!(statement_names_table(
            "TRUNCATE `app`.`orders`",
            "",
            "app",
            "orders"
        ));
        assert!(statement_names_table(
            "DROP TABLE `app`.`orders` /* generated by server */",
            "",
            "app",
            "orders"
        ));
        assert!(!statement_names_table(
            "ALTER TABLE orders ADD x INT",
            "other",
            "app",
            "orders"
        ));
        assert!(!statement_names_table(
            "CREATE TABLE `app`.`orders_zdm_old` (id INT)",
            "",
            "app",
            "orders"
        ));
        assert!(!statement_names_table(
            "DROP TABLE IF EXISTS `app`.`orders_zdm_log`",
            "app",
            "app",
            "orders"
        ));
        assert!(statement_names_table(
            "RENAME TABLE app.orders TO app.x",
            "",
            "app",
            "orders"
        ));
        assert!(statement_names_table(
            "ALTER TABLE 'unterminated",
            "",
            "app",
            "orders"
        ));
    }

    #[test]
    fn helper_names_sort_after_the_original_and_respect_the_length_limit() {
        let n = TableNames::new("orders").unwrap();
        for h in [&n.ghost, &n.old, &n.changelog, &n.checkpoint, &n.probe] {
            assert!(h.as_str() > "orders" && h.starts_with("orders"));
        }
        let long = "x".repeat(57);
        assert!(matches!(
            TableNames::new(&long),
            Err(DdlError::NameTooLong { chars: 65, .. })
        ));
        assert!(TableNames::new(&"x".repeat(56)).is_ok());
    }
}
