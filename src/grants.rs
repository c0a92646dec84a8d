//! What the connected user may do, read from `SHOW GRANTS`, and the preflight's privilege check.
//!
//! information_schema's privilege tables list only the grants made to the user by name: a user
//! whose privileges come through a role, the usual way on MySQL 8 and common on MariaDB, would
//! look as if it had none. `SHOW GRANTS` for the current user needs no privilege and shows, on
//! MariaDB, the grants of the user, of its current role and of the roles granted to that role;
//! on MySQL 8 the active roles' grants are asked for with `USING`.
//!
//! Only global (`*.*`) and database-level (`` `db`.* ``, wildcards included) grants count:
//! zdm-ost creates, renames and drops tables beside the original, which table-level grants on
//! the original do not allow.

use std::collections::BTreeSet;

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::conn::{Flavor, ServerInfo};
use crate::ddl::{ident, is_kw, tokenize, Tok, Token};
use crate::inspect::{q, PreflightError};

/// The privileges of the current user (and its roles), by level.
#[derive(Debug, Default)]
pub struct Grants {
    global: BTreeSet<String>,
    /// (database name pattern, privileges granted on it)
    schemas: Vec<(String, BTreeSet<String>)>,
}

impl Grants {
    /// Reads the current user's grants, its active roles' included.
    pub async fn current(conn: &mut Conn, flavor: Flavor) -> Result<Grants, mysql_async::Error> {
        let mut sql = "SHOW /* zdm-ost */ GRANTS".to_string();
        if flavor == Flavor::MySql {
            // "NONE", or the active roles as `r1`@`%`,`r2`@`%`
            let roles: Option<Option<String>> = conn
                .query_first("SELECT /* zdm-ost */ CURRENT_ROLE()")
                .await?;
            if let Some(roles) = roles.flatten().filter(|r| !r.is_empty() && r != "NONE") {
                sql = format!("SHOW /* zdm-ost */ GRANTS FOR CURRENT_USER() USING {roles}");
            }
        }
        let lines: Vec<String> = conn.query(sql).await?;
        Ok(Grants::parse(&lines))
    }

    /// Reads `SHOW GRANTS` lines; lines that grant roles, proxies, routines or table and column
    /// privileges are left out.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Grants {
        let mut grants = Grants::default();
        for line in lines {
            let Some((privileges, target)) = parse_line(line.as_ref()) else {
                continue;
            };
            match target {
                Target::Global => grants.global.extend(privileges),
                Target::Schema(pattern) => grants.schemas.push((pattern, privileges)),
            }
        }
        grants
    }

    /// Whether `privilege` is granted on `*.*` (directly or by `ALL PRIVILEGES`).
    pub fn global(&self, privilege: &str) -> bool {
        holds(&self.global, privilege)
    }

    /// Whether `privilege` is granted on `*.*` or on a database pattern that `db` matches.
    pub fn on_schema(&self, db: &str, privilege: &str) -> bool {
        self.global(privilege)
            || self
                .schemas
                .iter()
                .any(|(pattern, p)| holds(p, privilege) && like(pattern, db))
    }
}

/// Refuses a user that lacks what zdm-ost needs, naming the GRANT that fixes it; warns when
/// PROCESS is missing.
pub async fn check_privileges(
    conn: &mut Conn,
    server: &ServerInfo,
    db: &str,
    warnings: &mut Vec<String>,
) -> Result<(), PreflightError> {
    let user: String = conn
        .query_first("SELECT /* zdm-ost */ CURRENT_USER()")
        .await
        .map_err(q("the current user"))?
        .unwrap_or_default();
    let grants = Grants::current(conn, server.flavor)
        .await
        .map_err(q("the user's privileges"))?;
    let table_privs = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "ALTER",
        "INDEX",
        "LOCK TABLES",
    ];
    let mut missing_db: Vec<&str> = table_privs
        .iter()
        .copied()
        .filter(|p| !grants.on_schema(db, p))
        .collect();
    let mut missing_global: Vec<&str> = Vec::new();
    if !grants.global("REPLICATION SLAVE") {
        missing_global.push("REPLICATION SLAVE");
    }
    // MariaDB 10.5+ calls REPLICATION CLIENT "BINLOG MONITOR".
    if !grants.global("REPLICATION CLIENT") && !grants.global("BINLOG MONITOR") {
        missing_global.push("REPLICATION CLIENT");
    }
    if !grants.global("PROCESS") {
        warnings.push(format!(
            "user {user} lacks PROCESS: other users' long transactions cannot be seen before the cut-over lock"
        ));
    }
    if missing_db.is_empty() && missing_global.is_empty() {
        return Ok(());
    }
    let grantee = user
        .split_once('@')
        .map(|(u, h)| format!("'{u}'@'{h}'"))
        .unwrap_or_else(|| user.clone());
    let mut fixes = Vec::new();
    if !missing_db.is_empty() {
        fixes.push(format!(
            "GRANT {} ON {}.* TO {grantee}",
            missing_db.join(", "),
            crate::sql::quote_ident(db)
        ));
    }
    if !missing_global.is_empty() {
        fixes.push(format!(
            "GRANT {} ON *.* TO {grantee}",
            missing_global.join(", ")
        ));
    }
    let mut missing: Vec<String> = missing_db
        .drain(..)
        .map(|p| format!("{p} on `{db}`"))
        .collect();
    missing.extend(missing_global.iter().map(|p| format!("{p} (global)")));
    Err(PreflightError::MissingPrivileges {
        user: grantee,
        missing: missing.join(", "),
        grant: fixes.join("; "),
    })
}

fn holds(set: &BTreeSet<String>, privilege: &str) -> bool {
    set.contains(privilege) || set.contains("ALL PRIVILEGES") || set.contains("ALL")
}

enum Target {
    Global,
    Schema(String),
}

/// `GRANT <privileges> ON <target> TO <grantee> ...`, read with the ALTER parser's tokenizer:
/// the privileges (upper case) and the target, when the target is global or a database.
fn parse_line(line: &str) -> Option<(BTreeSet<String>, Target)> {
    let toks = tokenize(line).ok()?;
    if !is_kw(toks.first(), "GRANT") {
        return None;
    }
    let on = find_keyword(&toks, 1, "ON")?;
    let to = find_keyword(&toks, on + 1, "TO")?;
    let target = match &toks[on + 1..to] {
        [a, b, c]
            if a.tok == Tok::Punct('*') && b.tok == Tok::Punct('.') && c.tok == Tok::Punct('*') =>
        {
            Target::Global
        }
        // `PROCEDURE db.p`, a table, a proxy's user: not a database grant
        [db, b, c] if b.tok == Tok::Punct('.') && c.tok == Tok::Punct('*') => {
            Target::Schema(ident(Some(db))?)
        }
        _ => return None,
    };
    let privileges = toks[1..on]
        .split(|t| t.tok == Tok::Punct(','))
        // column privileges (`SELECT (a)`; only ever on a table, left out above anyway)
        .filter(|p| !p.iter().any(|t| t.tok == Tok::Punct('(')))
        .map(|p| {
            p.iter()
                .filter_map(|t| match &t.tok {
                    Tok::Word(w) => Some(w.to_ascii_uppercase()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|p| !p.is_empty())
        .collect();
    Some((privileges, target))
}

/// The index of the keyword `kw` from `from` on, outside parentheses (a backquoted name is never
/// a keyword).
fn find_keyword(toks: &[Token], from: usize, kw: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(from) {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            _ => {}
        }
        if depth == 0 && is_kw(Some(t), kw) {
            return Some(i);
        }
    }
    None
}

/// SQL `LIKE` as database-level grants use it: `%` any run, `_` any one character, `\` makes
/// the next character literal.
fn like(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    like_at(&p, &n)
}

fn like_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('%') => (0..=n.len()).any(|skip| like_at(&p[1..], &n[skip..])),
        Some('_') => !n.is_empty() && like_at(&p[1..], &n[1..]),
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && like_at(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && like_at(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What MariaDB 10.11 printed here for a user with a default role holding a nested role.
    const MARIADB_ROLE: &[&str] = &[
        "GRANT `zr` TO `ru`@`%`",
        "GRANT USAGE ON *.* TO `ru`@`%` IDENTIFIED BY PASSWORD '*7B9EBEED26AA52ED10C0F549FA863F13C39E0209'",
        "GRANT SELECT ON `r%`.* TO `ru`@`%`",
        "GRANT INSERT (`a`) ON `rt`.`t` TO `ru`@`%`",
        "GRANT `zr2` TO `zr`",
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `zr`",
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, LOCK TABLES ON `rt`.* TO `zr`",
        "GRANT PROCESS ON *.* TO `zr2`",
        "SET DEFAULT ROLE `zr` FOR `ru`@`%`",
    ];

    #[test]
    fn roles_grants_count_and_role_grants_themselves_do_not() {
        let g = Grants::parse(MARIADB_ROLE);
        assert!(g.global("REPLICATION SLAVE"));
        assert!(g.global("BINLOG MONITOR"));
        assert!(g.global("PROCESS"));
        assert!(!g.global("SUPER"));
        for p in ["SELECT", "CREATE", "LOCK TABLES", "ALTER"] {
            assert!(g.on_schema("rt", p), "{p}");
        }
        // the column grant on rt.t is no table- or database-level INSERT elsewhere
        assert!(!g.on_schema("other", "INSERT"));
        // `r%` matches any database starting with r
        assert!(g.on_schema("reports", "SELECT"));
        assert!(!g.on_schema("reports", "CREATE"));
    }

    #[test]
    fn all_privileges_and_mysql_8_style_lines() {
        let g = Grants::parse(&[
            "GRANT ALL PRIVILEGES ON `app`.* TO `u`@`%` WITH GRANT OPTION",
            "GRANT RELOAD, PROCESS, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u`@`%`",
            "GRANT BACKUP_ADMIN,REPLICATION_SLAVE_ADMIN ON *.* TO `u`@`%`",
            "GRANT EXECUTE ON PROCEDURE `app`.`p` TO `u`@`%`",
            "GRANT `app_rw`@`%` TO `u`@`%`",
            "GRANT PROXY ON ``@`%` TO `u`@`%`",
        ]);
        assert!(g.on_schema("app", "LOCK TABLES"));
        assert!(!g.on_schema("app2", "SELECT"));
        assert!(g.global("REPLICATION CLIENT"));
        assert!(g.global("REPLICATION_SLAVE_ADMIN"));
        assert!(!g.global("EXECUTE"));
        let root = Grants::parse(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"]);
        assert!(root.global("REPLICATION SLAVE") && root.on_schema("x", "DROP"));
    }

    #[test]
    fn database_patterns_follow_like_with_escapes() {
        assert!(like("my\\_db", "my_db"));
        assert!(!like("my\\_db", "myxdb"));
        assert!(like("my_db", "myxdb"));
        assert!(like("app%", "app"));
        assert!(like("%", "anything"));
        assert!(!like("app", "App"));
        let g = Grants::parse(&["GRANT SELECT ON `we``ird`.* TO `u`@`%`"]);
        assert!(g.on_schema("we`ird", "SELECT"));
        let g = Grants::parse(&["GRANT SELECT ON `we``ird %db`.* TO `u`@`%`"]);
        assert!(g.on_schema("we`ird xdb", "SELECT"));
        // " ON " inside a quoted name is not the keyword
        let g = Grants::parse(&["GRANT CREATE ON `a ON b`.* TO `u`@`%`"]);
        assert!(g.on_schema("a ON b", "CREATE"));
    }
}
