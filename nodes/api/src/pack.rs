//! A node pack as the binary ships it: the types it registers, and what it adds to the command
//! line, so that neither the engine nor the command line names a pack.

use crate::{Registry, RegistryError};
use std::sync::Arc;

/// What a pack brings: its node and socket types, flags of `run` and `validate` that set a param
/// on every node of a type, and commands of its own. Plain data, built with [`Pack::new`] and the
/// builder methods.
pub struct Pack {
    /// The pack's name, for messages.
    pub name: &'static str,
    /// Registers its socket and node types.
    pub register: fn(&mut Registry) -> Result<(), RegistryError>,
    /// Flags of `run` and `validate`.
    pub type_flags: Vec<TypeFlag>,
    /// Commands of its own (`swapgraph doctor`).
    pub commands: Vec<PackCommand>,
}

/// A flag that sets one param on every node of a type: `--blockswap-preset FILE` is
/// `--set-type BlockSwap.preset=FILE`.
#[derive(Clone, Copy, Debug)]
pub struct TypeFlag {
    /// The long flag, without its dashes.
    pub flag: &'static str,
    /// The value's name in `--help`.
    pub value_name: &'static str,
    /// The node type.
    pub node_type: &'static str,
    /// The param it sets on each node of that type.
    pub param: &'static str,
    /// What it does, for `--help`.
    pub help: &'static str,
}

/// Runs a pack's command on the arguments after its name, returning the exit code.
pub type RunCommand = Arc<dyn Fn(&[String]) -> u8 + Send + Sync>;

/// A command a pack adds, `swapgraph NAME ARGS...`: the pack parses the arguments after the name
/// itself (`--help` included) and returns the process's exit code.
#[derive(Clone)]
pub struct PackCommand {
    /// The command's name.
    pub name: &'static str,
    /// One line for `swapgraph --help`.
    pub about: &'static str,
    /// Runs the command on the arguments after its name.
    pub run: RunCommand,
}

impl Pack {
    /// A pack that registers its types with `register` and adds nothing else.
    pub fn new(name: &'static str, register: fn(&mut Registry) -> Result<(), RegistryError>) -> Self {
        Self {
            name,
            register,
            type_flags: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// Adds a flag of `run` and `validate`.
    pub fn type_flag(mut self, flag: TypeFlag) -> Self {
        self.type_flags.push(flag);
        self
    }

    /// Adds a command.
    pub fn command(mut self, command: PackCommand) -> Self {
        self.commands.push(command);
        self
    }
}
