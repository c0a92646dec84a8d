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
    #[error("interrupted: stopped cleanly, nothing was changed")]
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
    /// 1 for an error, 130 when interrupted (as shells report SIGINT).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Cancelled => 130,
            _ => 1,
        }
    }
}
