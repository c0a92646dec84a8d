//! The top-level error: each part's own error, wrapped. Every message names the object and the
//! fix; [`Error::exit_code`] is what the binary exits with.

use crate::conn::ConnError;
use crate::ddl::DdlError;
use crate::inspect::PreflightError;
use crate::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("invalid --alter: {0}")]
    Ddl(#[from] DdlError),
    #[error("preflight: {0}")]
    Preflight(#[from] PreflightError),
    #[error("plan: {0}")]
    Plan(PlanError),
    #[error("{0}")]
    Binlog(#[from] crate::binlog::BinlogError),
    #[error("{0}")]
    Copy(#[from] crate::copier::CopyError),
    #[error("{0}")]
    Follow(#[from] crate::apply::FollowError),
    #[error("{0}")]
    Cutover(#[from] crate::cutover::CutoverError),
    #[error("{what} failed: {reason}")]
    Sql { what: &'static str, reason: String },
    #[error("{0}")]
    ServerId(String),
    #[error("{0}")]
    Verify(#[from] crate::verify::VerifyError),
    #[error("--resume: {0}")]
    Resume(String),
    #[error("aborted: {0}. Nothing was renamed; the original table is untouched")]
    Aborted(String),
    #[error(
        "{0}; aborting before the cut-over. Nothing was renamed; the original table is untouched"
    )]
    Hook(String),
    #[error("another zdm-ost run is migrating {table} (connection {holder} holds its lock); wait for it to finish, or stop it first")]
    AlreadyRunning { table: String, holder: String },
    #[error("interrupted: stopped cleanly; the original table is untouched")]
    Cancelled,
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Cancelled => Error::Cancelled,
            PlanError::Preflight(p) => Error::Preflight(p),
            other => Error::Plan(other),
        }
    }
}

impl Error {
    /// Maps a server error to [`Error::Sql`], naming what was being done.
    pub fn sql(what: &'static str) -> impl Fn(mysql_async::Error) -> Error {
        move |e| Error::Sql {
            what,
            reason: crate::sql::server_message(&e),
        }
    }

    /// 1 for an error, 130 when interrupted (as shells report SIGINT).
    pub fn exit_code(&self) -> u8 {
        if self.is_cancelled() {
            130
        } else {
            1
        }
    }

    /// A lost connection: keep the ghost and checkpoint, so `--resume` can continue.
    pub fn keeps_checkpoint(&self) -> bool {
        use crate::apply::{ApplyError, FollowError};
        matches!(
            self,
            Error::Conn(crate::conn::ConnError::Unreachable { .. })
                | Error::Binlog(crate::binlog::BinlogError::Read {
                    transient: true,
                    ..
                })
                | Error::Follow(FollowError::Apply(ApplyError::Connection(_)))
        )
    }

    /// Did the run stop because it was told to (Ctrl-C, SIGTERM)?
    pub fn is_cancelled(&self) -> bool {
        use crate::apply::{ApplyError, FollowError};
        matches!(
            self,
            Error::Cancelled
                | Error::Copy(crate::copier::CopyError::Cancelled)
                | Error::Follow(FollowError::Apply(ApplyError::Cancelled))
                | Error::Cutover(crate::cutover::CutoverError::Cancelled)
                | Error::Verify(crate::verify::VerifyError::Follow(FollowError::Apply(
                    ApplyError::Cancelled
                )))
                | Error::Verify(crate::verify::VerifyError::Copy(
                    crate::copier::CopyError::Cancelled
                ))
        ) || matches!(
            self,
            Error::Cutover(crate::cutover::CutoverError::Follow(FollowError::Apply(
                ApplyError::Cancelled
            )))
        )
    }
}
