//! A node pack as the binary ships it: the types it registers, and what it adds to the command
//! line, so that neither the engine nor the command line names a pack.

use crate::{DeviceSpec, FileRoots, Registry, RegistryError, VramBudget, WorkflowNeed};
use std::path::PathBuf;
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

/// Runs a pack's command on the arguments after its name, with what the binary lends it,
/// returning the exit code.
pub type RunCommand = Arc<dyn Fn(&[String], &CommandContext) -> u8 + Send + Sync>;

/// What the binary lends a pack's command: checks that need the engine, which packs do not see.
#[derive(Clone)]
pub struct CommandContext {
    /// Rehearses a workflow as `run` would run it (see [`crate::Rehearsal`]).
    pub check_workflow: CheckWorkflow,
}

/// Rehearses a workflow: its needs and the budget the run would have, or why it could not be
/// read, planned or placed.
pub type CheckWorkflow = Arc<dyn Fn(&WorkflowCheck) -> Result<CheckedWorkflow, String> + Send + Sync>;

/// A workflow to check, with what `run` takes besides the file.
#[derive(Clone, Debug)]
pub struct WorkflowCheck {
    /// The workflow file.
    pub workflow: PathBuf,
    /// `--set` overrides, `node.param=value`.
    pub set: Vec<String>,
    /// The folders its file names resolve in.
    pub files: FileRoots,
    /// The device it would run on.
    pub device: DeviceSpec,
    /// The budget it would run within.
    pub vram_budget: VramBudget,
}

/// What checking a workflow found.
#[derive(Clone, Debug)]
pub struct CheckedWorkflow {
    /// What each of its stages needs of the device.
    pub need: WorkflowNeed,
    /// The most bytes the run could have for its models and their work on the device now, under
    /// its budget; `None` on the CPU.
    pub budget: Option<u64>,
    /// Bytes the process holds outside the models' copies (adapters), which the device must
    /// have beside `budget`.
    pub outside: u64,
}

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
