//! SQL text helpers shared by every part: the one identifier quoter, the statement tag, and
//! MySQL error-number helpers.
//!
//! Invariant: identifiers are always passed through [`quote_ident`] (which doubles backticks),
//! and values are always bound parameters, never formatted into SQL text.

/// Every statement zdm-ost sends starts with this tag, so a DBA can find it in the processlist
/// and the slow log.
pub const TAG: &str = "/* zdm-ost */";

/// Quotes an identifier with backticks, doubling any backtick inside it.
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// `` `db`.`table` ``
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

/// A comma-separated list of quoted identifiers.
pub fn ident_list<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The MySQL error number of a server error, if the error is one.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// The server's message of a server error, or the error's display text otherwise.
pub fn server_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (error {})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Is this error worth retrying the unit of work for? Lock wait timeout (1205, also what
/// `NOWAIT` returns), deadlock (1213), lost or gone connection (2013, 2006), and client-side I/O
/// errors. Never for, e.g., 1236 (binlog purged) or a data error.
pub fn is_retryable(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => matches!(s.code, 1205 | 1213 | 2006 | 2013 | 3572),
        mysql_async::Error::Io(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_backticks() {
        assert_eq!(quote_ident("orders"), "`orders`");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(quote_ident("``"), "``````");
        assert_eq!(quote_ident("emoji😀 name"), "`emoji😀 name`");
    }

    #[test]
    fn qualified_quotes_both_parts() {
        assert_eq!(qualified("a`b", "c.d"), "`a``b`.`c.d`");
        assert_eq!(ident_list(&["a", "b`"]), "`a`, `b```");
    }
}
