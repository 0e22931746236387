//! The `swapgraph` command line: `run`, `validate`, `nodes`, `import`, `serve` and `worker`, and what the packs add
//! (BlockSwap's `doctor` and `--blockswap-preset`).
//!
//! Exit codes, documented in `--help` and the README, are the [`Exit`] values.

mod args;
mod check_workflow;
mod devices;
mod exit;
mod import;
mod nodes;
mod render;
mod run;
mod serve;
mod worker;

pub use args::{Cli, Command};
pub use exit::Exit;

use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};
use std::process::ExitCode;
use swapgraph_node_api::{CommandContext, Pack, Registry};
use tracing_subscriber::EnvFilter;

/// The commands whose workflow the packs' type flags apply to.
const WORKFLOW_COMMANDS: [&str; 2] = ["run", "validate"];

/// Parses the command line, with what `packs` add to it, and runs the command against
/// `registry`'s node types.
pub fn main(registry: Registry, packs: &[Pack]) -> ExitCode {
    let matches = with_packs(Cli::command(), packs).get_matches();
    init_logging(&matches);
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(command) = packs.iter().flat_map(|p| &p.commands).find(|c| c.name == name) {
            let args: Vec<String> = sub.get_many::<String>("args").into_iter().flatten().cloned().collect();
            let context = CommandContext {
                check_workflow: check_workflow::workflow_checker(registry),
            };
            return ExitCode::from((command.run)(&args, &context));
        }
    }
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    apply_type_flags(&mut cli, &matches, packs);
    let exit = match cli.command {
        Command::Run(args) => run::run(args, registry),
        Command::Validate(args) => run::validate(args, &registry),
        Command::Nodes(args) => nodes::list(args, &registry),
        Command::Import(args) => import::import(args, &registry),
        Command::Serve(args) => serve::serve(args, registry),
        Command::Worker(args) => worker::worker(args, registry),
    };
    exit.into()
}

/// The multi-threaded async runtime the commands that run jobs use; the failure is logged.
fn async_runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!("cannot start the async runtime: {e}");
            Exit::RuntimeFailure
        })
}

/// The command line with the packs' commands and their flags of `run` and `validate`.
fn with_packs(mut command: clap::Command, packs: &[Pack]) -> clap::Command {
    for pack in packs {
        for added in &pack.commands {
            // The pack parses everything after the command's name itself, `--help` included.
            let args = Arg::new("args")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true);
            command = command.subcommand(
                clap::Command::new(added.name)
                    .about(added.about)
                    .disable_help_flag(true)
                    .arg(args),
            );
        }
        for flag in &pack.type_flags {
            for name in WORKFLOW_COMMANDS {
                command = command.mut_subcommand(name, |sub| {
                    sub.arg(
                        Arg::new(flag.flag)
                            .long(flag.flag)
                            .value_name(flag.value_name)
                            .help(flag.help),
                    )
                });
            }
        }
    }
    command
}

/// Turns each pack flag given to `run` or `validate` into the `--set-type` it stands for, after
/// those given.
fn apply_type_flags(cli: &mut Cli, matches: &ArgMatches, packs: &[Pack]) {
    let (Some((_, sub)), Some(set_type)) = (matches.subcommand(), cli.command.set_type()) else {
        return;
    };
    for flag in packs.iter().flat_map(|p| &p.type_flags) {
        if let Some(value) = sub.get_one::<String>(flag.flag) {
            // A JSON string is a YAML string too, so any value survives the override's parsing.
            let quoted = serde_json::Value::String(value.clone());
            set_type.push(format!("{}.{}={quoted}", flag.node_type, flag.param));
        }
    }
}

fn init_logging(matches: &ArgMatches) {
    let default_level = match (matches.get_flag("quiet"), matches.get_count("verbose")) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapgraph_node_api::{PackCommand, TypeFlag};

    fn pack() -> Pack {
        Pack::new("test", |_| Ok(()))
            .type_flag(TypeFlag {
                flag: "test-mode",
                value_name: "MODE",
                node_type: "TestNode",
                param: "mode",
                help: "The mode of every TestNode.",
            })
            .command(PackCommand {
                name: "check",
                about: "A pack's own command.",
                run: std::sync::Arc::new(|args: &[String], _: &CommandContext| {
                    u8::try_from(args.len()).unwrap_or(u8::MAX)
                }),
            })
    }

    #[test]
    fn a_pack_flag_becomes_the_set_type_it_stands_for_after_those_given() {
        let packs = [pack()];
        let line = [
            "swapgraph",
            "validate",
            "w.yaml",
            "--set-type",
            "A.b=1",
            "--test-mode",
            "fast slow",
        ];
        let matches = with_packs(Cli::command(), &packs).try_get_matches_from(line).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        apply_type_flags(&mut cli, &matches, &packs);
        assert_eq!(
            cli.command.set_type().unwrap(),
            &["A.b=1".to_string(), "TestNode.mode=\"fast slow\"".to_string()]
        );
    }

    #[test]
    fn a_pack_command_gets_every_argument_after_its_name() {
        let packs = [pack()];
        let line = ["swapgraph", "check", "--help", "x", "-v"];
        let matches = with_packs(Cli::command(), &packs).try_get_matches_from(line).unwrap();
        let (name, sub) = matches.subcommand().unwrap();
        let args: Vec<&str> = sub.get_many::<String>("args").unwrap().map(String::as_str).collect();
        assert_eq!((name, args), ("check", vec!["--help", "x", "-v"]));
    }
}
