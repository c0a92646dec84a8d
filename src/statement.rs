//! What a statement in the binlog (a QUERY event) means for the migrated table (docs/design.md,
//! fidelity rule 4: fail closed on the stream, but only for what matters).
//!
//! Row changes reach zdm-ost as row events; a statement in the binlog is DDL, an administrative
//! statement, or DML some session wrote in STATEMENT format. Only a statement that changes the
//! table's rows or definition (or might: statement-format DML in its database, a statement that
//! names the table and cannot be classified) stops the run. Statements that change neither
//! (`ANALYZE TABLE`, `OPTIMIZE TABLE`, `GRANT ... ON db.t`, `CREATE VIEW ... FROM t`,
//! `CREATE TABLE x LIKE t`, `ALTER EVENT`, ...) do not: a nightly `mysqlcheck --analyze` must
//! not throw hours of copying away.
//!
//! The text is read as the server ran it: executable comments (`/*! ... */`, `/*!40000 ... */`,
//! `/*M!100000 ... */`) are code, and `ANSI_QUOTES` (from the event's own sql_mode) makes
//! `"t"` a name. Why not a SQL parser crate: sqlparser 0.59's MySQL dialect was evaluated (see
//! docs/design.md): it rejected 11 of 21 statements taken from binlogs (`OPTIMIZE TABLE`,
//! `ALTER EVENT`, `LOAD DATA INFILE`, ...) and read `/*!40000 TRUNCATE TABLE t */` as no
//! statement at all; a statement it could not parse would have to stop the run. A classifier
//! over the leading keywords, with the table's name looked for in the rest, is what the
//! decision needs.

use crate::ddl::{executable_comments_as_code, ident, is_kw, tokenize_with, Tok, Token};

const STATEMENT_DML: &str = "DML was written to the binlog as a statement (binlog_format STATEMENT or MIXED in that session) where a view or trigger may reach the table; the rows it changed are not in the binlog";
const ROUTINE: &str = "a stored function wrote in STATEMENT format (binlog_format STATEMENT or MIXED in that session); it may have changed the table's rows, which the binlog does not carry";

/// What a statement does to the migrated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Changes neither its rows nor its definition (or does not concern it).
    Harmless,
    /// Changes, or may change, the table: the run stops, saying why.
    Stops(&'static str),
}

/// How the statement's text is read (from the QUERY event's sql_mode), and what else can
/// reach the table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
    /// A trigger or stored routine of another database names the table: statement-format DML
    /// anywhere may reach it ([`reached_from_elsewhere`]).
    pub reached_from_elsewhere: bool,
    /// `lower_case_table_names` is not 0: table and database names compare case-insensitively.
    pub names_case_insensitive: bool,
}

/// Whether a trigger, stored routine or view outside `db` (and outside the server's own `sys`
/// and `mysql`) mentions `table` (by name, in its body): then a statement-format write in
/// another database may change the table. A routine body zdm-ost's user may not read counts as
/// mentioning it.
pub async fn reached_from_elsewhere(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &str,
) -> Result<bool, mysql_async::Error> {
    use mysql_async::prelude::*;
    let like = format!(
        "%{}%",
        table
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let n: Option<u64> = conn
        .exec_first(
            "SELECT /* zdm-ost */ (SELECT COUNT(*) FROM information_schema.TRIGGERS \
               WHERE TRIGGER_SCHEMA <> ? AND TRIGGER_SCHEMA NOT IN ('sys', 'mysql') AND ACTION_STATEMENT LIKE ?) \
             + (SELECT COUNT(*) FROM information_schema.ROUTINES \
               WHERE ROUTINE_SCHEMA <> ? AND ROUTINE_SCHEMA NOT IN ('sys', 'mysql') \
               AND (ROUTINE_DEFINITION IS NULL OR ROUTINE_DEFINITION LIKE ?)) \
             + (SELECT COUNT(*) FROM information_schema.VIEWS \
               WHERE TABLE_SCHEMA <> ? AND TABLE_SCHEMA NOT IN ('sys', 'mysql') AND VIEW_DEFINITION LIKE ?)",
            (db, &like, db, &like, db, &like),
        )
        .await?;
    Ok(n.unwrap_or(1) > 0)
}

/// Classifies `sql`, run with default database `schema`, against `db`.`table`.
pub fn classify(sql: &str, schema: &str, db: &str, table: &str, how: Reading) -> Verdict {
    let code = executable_comments_as_code(sql, how.no_backslash_escapes);
    let Ok(toks) = tokenize_with(&code, how.ansi_quotes, how.no_backslash_escapes) else {
        return if mentions(sql, table) {
            Verdict::Stops("a statement zdm-ost cannot read names the table")
        } else {
            Verdict::Harmless
        };
    };
    let n = Names {
        schema,
        db,
        table,
        ci: how.names_case_insensitive,
    };
    let names = |toks: &[Token]| n.named_in(toks);
    let first = toks
        .iter()
        .position(|t| !matches!(t.tok, Tok::Punct('(')))
        .unwrap_or(0);
    let t = &toks[first..];
    let kw = |i: usize, w: &str| is_kw(t.get(i), w);
    let word = |i: usize| match t.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    };
    // `SET STATEMENT var = value, ... FOR <statement>` and `ANALYZE <statement>`: the
    // statement after them is what runs
    let rest_after = |i: usize| t.get(i).map(|x| &code[x.start..]);
    if word(0) == "SET" && kw(1, "STATEMENT") {
        let mut depth = 0;
        for (i, x) in t.iter().enumerate() {
            match x.tok {
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') => depth -= 1,
                Tok::Word(ref w) if depth == 0 && w.eq_ignore_ascii_case("FOR") => {
                    return match rest_after(i + 1) {
                        Some(rest) => classify(rest, schema, db, table, how),
                        None => Verdict::Harmless,
                    };
                }
                _ => {}
            }
        }
    }
    if word(0) == "ANALYZE" && !["TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"].contains(&word(1).as_str())
    {
        if let Some(rest) = rest_after(1) {
            return classify(rest, schema, db, table, how);
        }
    }
    match word(0).as_str() {
        // administrative statements: the rows and the definition stay as they are (InnoDB's
        // OPTIMIZE rebuilds the same rows; REPAIR does nothing to InnoDB)
        "ANALYZE" | "CHECK" | "CHECKSUM" | "OPTIMIZE" | "REPAIR" => Verdict::Harmless,
        "GRANT" | "REVOKE" => Verdict::Harmless,
        // a SELECT, DO or SET reaches the binlog only when a stored function it calls wrote
        "SELECT" | "DO" => Verdict::Stops(ROUTINE),
        "SET" if kw(1, "PASSWORD") || kw(1, "ROLE") || kw(1, "DEFAULT") => Verdict::Harmless,
        "SET" if calls_a_function(t) => Verdict::Stops(ROUTINE),
        "SET" | "SAVEPOINT" | "RELEASE" | "FLUSH" | "XA" | "USE" | "SHOW" | "BEGIN" | "COMMIT"
        | "ROLLBACK" | "INSTALL" | "UNINSTALL" | "PURGE" | "RESET" | "KILL" => Verdict::Harmless,
        // a routine may reach the table from anywhere
        "CALL" => Verdict::Stops(ROUTINE),
        // a view or trigger in its database, or a trigger elsewhere that names it, may reach the
        // table without the statement naming it; the rows it changed are not in the binlog
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "WITH" => {
            if n.eq(schema, db) || names(t) || n.db_named_in(t) || how.reached_from_elsewhere {
                Verdict::Stops(STATEMENT_DML)
            } else {
                Verdict::Harmless
            }
        }
        "CREATE" => create(t, &n),
        "ALTER" => alter(t, &n),
        "DROP" => {
            let what = word(after_modifiers(t, 1));
            match what.as_str() {
                "DATABASE" | "SCHEMA"
                    if ident(t.get(last_name(t))).is_some_and(|d| n.eq(&d, db)) =>
                {
                    Verdict::Stops("its database is dropped")
                }
                "VIEW" | "EVENT" | "PROCEDURE" | "FUNCTION" | "USER" | "ROLE" | "SERVER"
                | "PACKAGE" | "DATABASE" | "SCHEMA" => Verdict::Harmless,
                _ if names(t) => Verdict::Stops("it drops the table or one of its parts"),
                _ => Verdict::Harmless,
            }
        }
        "RENAME" if kw(1, "USER") => Verdict::Harmless,
        "RENAME" if names(t) => Verdict::Stops("it renames the table"),
        "TRUNCATE" if names(t) => Verdict::Stops("it truncates the table"),
        "RENAME" | "TRUNCATE" => Verdict::Harmless,
        _ if names(t) => Verdict::Stops("a statement zdm-ost cannot classify names the table"),
        _ => Verdict::Harmless,
    }
}

/// `CREATE ...`: only a new table that references ours, an index or trigger on it, or a table
/// of its very name matters.
fn create(t: &[Token], n: &Names) -> Verdict {
    let i = after_modifiers(t, 1);
    let what = match t.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    };
    match what.as_str() {
        "VIEW" | "EVENT" | "PROCEDURE" | "FUNCTION" | "USER" | "ROLE" | "DATABASE" | "SCHEMA"
        | "SERVER" | "PACKAGE" | "SEQUENCE" => Verdict::Harmless,
        "TABLE" => {
            let mut k = i + 1;
            if is_kw(t.get(k), "IF") {
                k += 3; // IF NOT EXISTS
            }
            if n.is_at(t, k) {
                Verdict::Stops("a table of its name is created")
            } else if n.referenced_by(t, &n.db_of(t, k)) {
                Verdict::Stops("a new table gets a foreign key to it")
            } else {
                Verdict::Harmless
            }
        }
        // CREATE [UNIQUE|...] INDEX i ON t
        "INDEX" => match t
            .iter()
            .position(|x| matches!(&x.tok, Tok::Word(w) if w.eq_ignore_ascii_case("ON")))
        {
            Some(on) if n.is_at(t, on + 1) => Verdict::Stops("it adds an index to the table"),
            Some(_) => Verdict::Harmless,
            None => Verdict::Stops("a statement zdm-ost cannot classify names the table"),
        },
        // a trigger on the table, or one elsewhere whose body names it (it may write it)
        _ if n.named_in(t) => {
            Verdict::Stops("it adds a trigger to the table, or one that names it")
        }
        _ => Verdict::Harmless,
    }
}

/// `ALTER ...`: our table itself, another table given a foreign key to ours, or a partition
/// exchanged with ours.
fn alter(t: &[Token], n: &Names) -> Verdict {
    let i = after_modifiers(t, 1);
    match t.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("TABLE") => {
            let mut k = i + 1;
            if is_kw(t.get(k), "IF") {
                k += 2; // IF EXISTS
            }
            let exchanged = (0..t.len()).any(|j| {
                is_kw(t.get(j), "WITH") && is_kw(t.get(j + 1), "TABLE") && n.is_at(t, j + 2)
            });
            let renamed_to_ours = (0..t.len()).any(|j| {
                is_kw(t.get(j), "RENAME") && {
                    let m = if is_kw(t.get(j + 1), "TO") || is_kw(t.get(j + 1), "AS") {
                        j + 2
                    } else {
                        j + 1
                    };
                    n.is_at(t, m)
                }
            });
            if n.is_at(t, k) {
                Verdict::Stops("it alters the table")
            } else if n.referenced_by(t, &n.db_of(t, k)) {
                Verdict::Stops("another table gets a foreign key to it")
            } else if exchanged {
                Verdict::Stops("a partition is exchanged with the table")
            } else if renamed_to_ours {
                Verdict::Stops("another table is renamed to its name")
            } else {
                Verdict::Harmless
            }
        }
        Some(Tok::Word(w))
            if [
                "EVENT",
                "VIEW",
                "USER",
                "DATABASE",
                "SCHEMA",
                "PROCEDURE",
                "FUNCTION",
                "SERVER",
                "SEQUENCE",
                "ROLE",
                "LOGFILE",
                "TABLESPACE",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k)) =>
        {
            Verdict::Harmless
        }
        _ if n.named_in(t) => Verdict::Stops("a statement zdm-ost cannot classify names the table"),
        _ => Verdict::Harmless,
    }
}

/// The index of the first word after `CREATE`/`ALTER`/`DROP`'s modifiers: `OR REPLACE`,
/// `ONLINE`, `IGNORE`, `TEMPORARY`, `UNIQUE`, `DEFINER = ...`, `ALGORITHM = ...`,
/// `SQL SECURITY ...`, `AGGREGATE`.
fn after_modifiers(t: &[Token], mut i: usize) -> usize {
    loop {
        let w = match t.get(i).map(|t| &t.tok) {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => return i,
        };
        match w.as_str() {
            "OR" | "ONLINE" | "OFFLINE" | "IGNORE" | "TEMPORARY" | "UNIQUE" | "FULLTEXT"
            | "SPATIAL" | "AGGREGATE" | "NO_WRITE_TO_BINLOG" | "LOCAL" => i += 1,
            "REPLACE" if i > 1 && is_kw(t.get(i - 1), "OR") => i += 1,
            "DEFINER" | "ALGORITHM" => {
                // DEFINER = user@host (a few tokens): skip to the next keyword we know
                i += 2;
                while let Some(tok) = t.get(i) {
                    match &tok.tok {
                        Tok::Word(w)
                            if ["VIEW", "TRIGGER", "EVENT", "PROCEDURE", "FUNCTION", "SQL"]
                                .iter()
                                .any(|k| w.eq_ignore_ascii_case(k)) =>
                        {
                            break
                        }
                        _ => i += 1,
                    }
                }
            }
            "SQL" => i += 3, // SQL SECURITY DEFINER|INVOKER
            _ => return i,
        }
    }
}

/// The migrated table as a statement run in `schema` names it.
struct Names<'a> {
    schema: &'a str,
    db: &'a str,
    table: &'a str,
    /// `lower_case_table_names` is not 0.
    ci: bool,
}

impl Names<'_> {
    fn eq(&self, a: &str, b: &str) -> bool {
        if self.ci {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// Is the (possibly qualified) name at token `i` our table? `.t` (a leading dot) is the
    /// default database's, as the server reads it.
    fn is_at(&self, t: &[Token], i: usize) -> bool {
        if t.get(i).map(|x| &x.tok) == Some(&Tok::Punct('.')) {
            return ident(t.get(i + 1)).is_some_and(|a| self.eq(&a, self.table))
                && self.eq(self.schema, self.db);
        }
        let Some(a) = ident(t.get(i)) else {
            return false;
        };
        if t.get(i + 1).map(|x| &x.tok) == Some(&Tok::Punct('.')) {
            ident(t.get(i + 2)).is_some_and(|b| self.eq(&b, self.table)) && self.eq(&a, self.db)
        } else {
            self.eq(&a, self.table) && self.eq(self.schema, self.db)
        }
    }

    /// The database of the (possibly qualified) table name at token `i`.
    fn db_of(&self, t: &[Token], i: usize) -> String {
        match (ident(t.get(i)), t.get(i + 1).map(|x| &x.tok)) {
            (Some(d), Some(Tok::Punct('.'))) => d,
            _ => self.schema.to_string(),
        }
    }

    /// Does a `REFERENCES` clause name our table? An unqualified name there is in `in_db`, the
    /// database of the table that gets the foreign key (as the server resolves it).
    fn referenced_by(&self, t: &[Token], in_db: &str) -> bool {
        let there = Names {
            schema: in_db,
            ..*self
        };
        (0..t.len()).any(|i| is_kw(t.get(i), "REFERENCES") && there.is_at(t, i + 1))
    }

    /// Does the statement name our table anywhere (qualified with `db`, unqualified or with a
    /// leading dot in `schema` = `db`; with spaces around a dot, either reading counts)?
    fn named_in(&self, t: &[Token]) -> bool {
        (0..t.len()).any(|i| {
            let Some(name) = ident(t.get(i)) else {
                return false;
            };
            if !self.eq(&name, self.table) {
                return false;
            }
            let dotted = i >= 1 && t[i - 1].tok == Tok::Punct('.');
            let qualifier = if dotted {
                ident(t.get(i.wrapping_sub(2)))
            } else {
                None
            };
            let adjacent = dotted && i >= 2 && t[i - 2].end == t[i - 1].start;
            match qualifier {
                Some(q) if adjacent => self.eq(&q, self.db),
                Some(q) => self.eq(&q, self.db) || self.eq(self.schema, self.db),
                None => self.eq(self.schema, self.db),
            }
        })
    }

    /// Does the statement name `db` as a qualifier anywhere (`db.x`)?
    fn db_named_in(&self, t: &[Token]) -> bool {
        t.windows(2).any(|w| {
            ident(Some(&w[0])).is_some_and(|d| self.eq(&d, self.db)) && w[1].tok == Tok::Punct('.')
        })
    }
}

/// The token index of the last name of the statement (`DROP DATABASE IF EXISTS db`).
fn last_name(t: &[Token]) -> usize {
    t.iter()
        .rposition(|x| matches!(x.tok, Tok::Word(_) | Tok::Quoted(_)))
        .unwrap_or(0)
}

/// Does the statement call a function (`name(`)?
fn calls_a_function(t: &[Token]) -> bool {
    t.windows(2)
        .any(|w| matches!(w[0].tok, Tok::Word(_) | Tok::Quoted(_)) && w[1].tok == Tok::Punct('('))
}

/// The crude test for text that cannot be tokenized.
fn mentions(sql: &str, table: &str) -> bool {
    sql.contains(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(sql: &str) -> Verdict {
        classify(sql, "app", "app", "t", Reading::default())
    }

    fn stops(sql: &str) -> bool {
        matches!(v(sql), Verdict::Stops(_))
    }

    #[test]
    fn statements_that_change_neither_rows_nor_definition_do_not_stop() {
        for sql in [
            "ANALYZE TABLE t",
            "ANALYZE NO_WRITE_TO_BINLOG TABLE `app`.`t`",
            "OPTIMIZE TABLE t",
            "CHECK TABLE t",
            "ALTER EVENT t DISABLE",
            "ALTER DEFINER=`root`@`localhost` EVENT `t` ON SCHEDULE EVERY 1 SECOND",
            "GRANT SELECT ON app.t TO 'u'@'%'",
            "REVOKE ALL ON `app`.`t` FROM u",
            "CREATE VIEW v AS SELECT * FROM t",
            "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`root`@`%` SQL SECURITY DEFINER VIEW v AS SELECT a FROM t",
            "CREATE TABLE t_backup LIKE t",
            "CREATE TABLE IF NOT EXISTS t_copy AS SELECT * FROM t",
            "DROP VIEW v",
            "DROP TABLE other",
            "ALTER TABLE other ADD COLUMN c INT",
            "RENAME TABLE a TO b",
            "TRUNCATE TABLE other",
            "CREATE EVENT t ON SCHEDULE EVERY 1 SECOND DO INSERT INTO t VALUES (1)",
            "DROP EVENT IF EXISTS t",
            "SET PASSWORD FOR u = PASSWORD('x')",
            // a column, a constraint or an index merely called like the table
            "ALTER TABLE other.o ADD COLUMN t INT",
            "ALTER TABLE other.o ADD CONSTRAINT t CHECK (x > 0)",
            "CREATE INDEX t ON other.o (x)",
            // an unqualified REFERENCES is resolved in the new table's database
            "CREATE TABLE other.child (id INT, pid INT, FOREIGN KEY (pid) REFERENCES t (id))",
        ] {
            assert_eq!(v(sql), Verdict::Harmless, "{sql}");
        }
    }

    #[test]
    fn statements_that_change_the_table_stop_however_they_are_written() {
        for sql in [
            "TRUNCATE TABLE t",
            "TRUNCATE t",
            "/*!40000 TRUNCATE TABLE t */",
            "/*M!100100 TRUNCATE TABLE `t` */",
            "ALTER TABLE t ADD COLUMN x INT",
            "ALTER ONLINE TABLE app.t ENGINE=InnoDB",
            "DROP TABLE IF EXISTS other, t",
            "DROP TABLE `app`.`t` /* generated by server */",
            "RENAME TABLE t TO t2",
            "RENAME TABLE t2 TO t",
            "CREATE INDEX i ON t (a)",
            "CREATE UNIQUE INDEX i ON app.t (a)",
            "DROP INDEX i ON t",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1",
            "CREATE TABLE child (id INT, FOREIGN KEY (id) REFERENCES t (id))",
            "ALTER TABLE child ADD FOREIGN KEY (pid) REFERENCES app.t (id)",
            "CREATE TABLE t (id INT)",
            "DROP DATABASE app",
            "UPDATE v SET a = 1",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM other_in_app",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
            "FROBNICATE t",
            "SELECT f(20)",
            "DO o.f(20)",
            "SET @x = f(20)",
            "ALTER TABLE pt EXCHANGE PARTITION p0 WITH TABLE t",
            "ALTER TABLE other.x RENAME TO app.t",
            "SET STATEMENT max_statement_time=0 FOR TRUNCATE TABLE t",
            "SET STATEMENT a=1, b=(2) FOR UPDATE t SET a = 1",
            "TRUNCATE TABLE .t",
            "ALTER TABLE .t ADD COLUMN q INT",
            "ANALYZE DELETE FROM t WHERE id <= 10",
            "/* ' */ /*!40000 TRUNCATE TABLE t */ /* ' */",
        ] {
            assert!(stops(sql), "{sql}");
        }
        // from another default database, an unqualified REFERENCES in our database is ours
        assert!(matches!(
            classify(
                "CREATE TABLE app.child (id INT, pid INT, FOREIGN KEY (pid) REFERENCES t (id))",
                "other",
                "app",
                "t",
                Reading::default()
            ),
            Verdict::Stops(_)
        ));
        // lower_case_table_names=1: T is t
        let ci = Reading {
            names_case_insensitive: true,
            ..Reading::default()
        };
        assert!(matches!(
            classify("TRUNCATE TABLE T", "APP", "app", "t", ci),
            Verdict::Stops(_)
        ));
        assert_eq!(v("TRUNCATE TABLE T"), Verdict::Harmless);
        // statement-format DML elsewhere stops only where a trigger or routine elsewhere names it
        let elsewhere = Reading {
            reached_from_elsewhere: true,
            ..Reading::default()
        };
        let other = |how| classify("INSERT INTO o.log VALUES (1)", "o", "app", "t", how);
        assert_eq!(other(Reading::default()), Verdict::Harmless);
        assert!(matches!(other(elsewhere), Verdict::Stops(_)));
        assert!(matches!(
            classify("CALL o.p()", "o", "app", "t", Reading::default()),
            Verdict::Stops(_)
        ));
        let ansi = Reading {
            ansi_quotes: true,
            ..Reading::default()
        };
        assert!(matches!(
            classify("TRUNCATE TABLE \"t\"", "app", "app", "t", ansi),
            Verdict::Stops(_)
        ));
        // without ANSI_QUOTES "t" is a string, not the table
        assert_eq!(v("SHOW CREATE TABLE \"t\""), Verdict::Harmless);
    }

    #[test]
    fn executable_comments_are_code_and_quoted_text_is_not() {
        let code = |s: &str| executable_comments_as_code(s, false);
        assert_eq!(
            code("/*!40000 ALTER TABLE t DISABLE KEYS */;").trim(),
            "ALTER TABLE t DISABLE KEYS  ;"
        );
        assert_eq!(code("SELECT '/*!x */'"), "SELECT '/*!x */'");
        assert!(code("/*M!100000 TRUNCATE t*/").contains("TRUNCATE t"));
        // a quote inside an ordinary comment starts no string
        assert!(code("/* ' */ /*!40000 TRUNCATE TABLE t */ /* ' */").contains(" TRUNCATE TABLE t "));
        // under NO_BACKSLASH_ESCAPES 'x\' ends at its second quote
        let nbe = executable_comments_as_code("COMMENT 'x\\' /*!40000 , ADD X */", true);
        assert!(nbe.contains(" , ADD X "), "{nbe}");
    }
}
