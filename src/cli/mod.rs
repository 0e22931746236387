//! The `swapgraph` command line: `run`, `validate`, `nodes`, `doctor` and `serve`.
//!
//! Exit codes, documented in `--help` and the README, are the [`Exit`] values.

mod args;
mod doctor;
mod exit;
mod nodes;
mod render;
mod run;
mod serve;

pub use args::{Cli, Command};
pub use exit::Exit;

use clap::Parser;
use std::process::ExitCode;
use swapgraph_node_api::Registry;
use tracing_subscriber::EnvFilter;

/// Parses the command line and runs the command against `registry`'s node types.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let exit = match cli.command {
        Command::Run(args) => run::run(args, registry),
        Command::Validate(args) => run::validate(args, &registry),
        Command::Nodes(args) => nodes::list(args, &registry),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Serve(args) => serve::serve(args, registry),
    };
    exit.into()
}
