//! zdm-ost: zero-downtime schema changes for MySQL 8.0 and MariaDB 10.6+.
//!
//! The parts, one module each (see DESIGN.md): `cli` (flags), `conn` (connections, server
//! flavour), `inspect` (preflight), `ddl` (understanding --alter, helper names), `plan` (probe,
//! classification, dry-run report), `sql` (quoting, statement tag), `error`.

pub mod apply;
pub mod binlog;
pub mod changelog;
pub mod checkpoint;
pub mod cli;
pub mod conn;
pub mod control;
pub mod copier;
pub mod cutover;
pub mod ddl;
pub mod error;
pub mod failpoint;
pub mod grants;
pub mod hooks;
pub mod indexes;
pub mod inspect;
pub mod key;
pub mod key_compat;
pub mod leftovers;
pub mod metrics;
pub mod migration;
pub mod native_check;
pub mod plan;
pub mod progress;
pub mod resync;
pub mod sql;
pub mod statement;
pub mod throttle;
pub mod verify;

use tokio_util::sync::CancellationToken;

pub use error::Error;

/// A dry run: preflight, probe, plan. Changes nothing and leaves nothing behind.
pub async fn dry_run(cfg: &cli::Config, cancel: &CancellationToken) -> Result<plan::Plan, Error> {
    let names = ddl::TableNames::new(&cfg.table)?;
    let spec = ddl::parse_alter(&cfg.alter, &cfg.table)?;
    let mut conn = cfg.primary.connect().await?;
    let plan = plan::prepare(&mut conn, cfg, &names, &spec, false, cancel).await?;
    let _ = conn.disconnect().await;
    Ok(plan)
}
