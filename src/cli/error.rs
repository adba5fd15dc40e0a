//! CLI failures and their exit codes (CONTRACT.md): 1 failure, 2 bad arguments or machine not
//! resolved, 3 not signed in, 6 permission denied.

use thiserror::Error;
use tonic::Code;

use crate::core::resolver::ResolveError;

/// A failure the CLI reports with a specific exit code.
#[derive(Debug, Error)]
pub(crate) enum CliError {
    /// No usable credential.
    #[error("not signed in: run `cmdop login`")]
    NotSignedIn,
    /// The server refused the credential; its message says why.
    #[error("{0}")]
    Unauthenticated(String),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The machine name did not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The role or the attach password refused it.
    #[error("{0}")]
    Denied(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            CliError::NotSignedIn | CliError::Unauthenticated(_) => 3,
            CliError::Usage(_) | CliError::Resolve(_) => 2,
            CliError::Denied(_) => 6,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_string();
        match s.code() {
            Code::Unauthenticated => CliError::Unauthenticated(msg),
            Code::PermissionDenied => CliError::Denied(msg),
            Code::InvalidArgument | Code::NotFound => CliError::Usage(msg),
            Code::Unavailable if msg.is_empty() || msg.contains("tcp connect") || msg.contains("transport") => {
                CliError::Failed(format!("cannot reach the server: {msg}"))
            }
            _ => CliError::Failed(msg),
        }
    }
}
