//! Command-line flags (clap), parsed into a plain [`Args`] first and then resolved into a
//! [`Config`] the rest of zdm-ost works from.

use clap::Parser;

use crate::conn::Endpoint;

/// Online schema changes for MySQL and MariaDB, without blocking the table.
///
/// zdm-ost copies the table into a ghost table with the new schema, follows ongoing changes
/// through the binlog, and swaps the tables with an atomic rename. Without --execute it is a dry
/// run: it checks everything, prints the plan, and changes nothing.
#[derive(Debug, Parser)]
#[command(name = "zdm-ost", version, about, long_about = None)]
pub struct Args {
    /// The primary's host.
    #[arg(long, env = "ZDM_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// The primary's port.
    #[arg(long, env = "ZDM_PORT", default_value_t = 3306)]
    pub port: u16,
    /// The user to connect as (on the primary and on every replica).
    #[arg(long, short = 'u', env = "ZDM_USER", default_value = "root")]
    pub user: String,
    /// The password; prefer the ZDM_PASSWORD environment variable, which other users cannot see
    /// in the process list. Never printed or logged.
    #[arg(long, env = "ZDM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The database (schema) holding the table.
    #[arg(long, short = 'd')]
    pub database: String,
    /// The table to change.
    #[arg(long, short = 't')]
    pub table: String,
    /// The body of the ALTER TABLE, e.g. "ADD COLUMN note TEXT NULL".
    #[arg(long, short = 'a')]
    pub alter: String,
    /// A replica to watch, as HOST:PORT (repeat for several).
    #[arg(long = "replica", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub replicas: Vec<(String, u16)>,
    /// Print the plan (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` in `{s}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

/// Everything a run needs, resolved from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub primary: Endpoint,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub replicas: Vec<(String, u16)>,
}

impl From<&Args> for Config {
    fn from(a: &Args) -> Self {
        Config {
            primary: Endpoint {
                host: a.host.clone(),
                port: a.port,
                user: a.user.clone(),
                password: a.password.clone(),
            },
            database: a.database.clone(),
            table: a.table.clone(),
            alter: a.alter.clone(),
            replicas: a.replicas.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_addresses_parse_or_say_why_not() {
        assert_eq!(parse_host_port("db2:3307"), Ok(("db2".into(), 3307)));
        assert_eq!(parse_host_port("[::1]:3307"), Ok(("::1".into(), 3307)));
        assert_eq!(parse_host_port("db2"), Err("`db2` is not HOST:PORT".into()));
        assert_eq!(
            parse_host_port("db2:x"),
            Err("`x` in `db2:x` is not a port number".into())
        );
    }
}
