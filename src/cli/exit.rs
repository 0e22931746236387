//! Process exit codes.

use std::process::ExitCode;

/// How the process ends; scripts can tell these apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything asked for was done.
    Success = 0,
    /// 1: the workflow was valid but a node failed while running.
    RuntimeFailure = 1,
    /// 2: the command line itself is wrong (unknown flag, bad device name).
    Usage = 2,
    /// 3: the workflow cannot be read or is invalid; nothing ran.
    InvalidWorkflow = 3,
    /// 130: the run was cancelled (Ctrl-C).
    Cancelled = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
