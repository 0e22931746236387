//! The node API of swapgraph: what a node type is, what flows between nodes, and how node packs
//! register their types.
//!
//! The engine and every node pack depend on this crate and on nothing of each other: the engine
//! plans and runs graphs of [`NodeType`]s it finds in a [`Registry`]; a pack implements
//! [`NodeType`] and adds its types to the registry in its `register` function. A node type is
//! described once, by its [`NodeDescriptor`]; validation, the CLI's node listing and the editor's
//! palette all read that one descriptor. Its params are declared once, as a struct deriving
//! [`Params`], and read back as that struct.

// The derives name this crate by its path, which must resolve inside it too.
extern crate self as swapgraph_node_api;

mod args;
mod cancel;
mod context;
mod descriptor;
mod device;
mod error;
mod files;
mod memory;
mod node;
pub mod output;
mod pack;
mod param;
mod registry;
mod rehearsal;
mod socket;
mod typed;
mod value;

pub use args::Args;
pub use cancel::CancelToken;
pub use context::{NodeReporter, Preview, RunContext};
pub use descriptor::{InputSpec, NodeDescriptor, OutputSpec};
pub use device::{DeviceParseError, DeviceSpec, VramBudget, VramBudgetParseError};
pub use error::NodeError;
pub use files::{FileRoots, BUILTIN_PREFIX};
pub use memory::{host_available_bytes, host_total_bytes, MemoryReport, PassTimeline, UnitSpan};
pub use node::NodeType;
pub use pack::{
    CheckWorkflow, CheckedWorkflow, CommandContext, Pack, PackCommand, RunCommand, TypeFlag, WorkflowCheck,
};
pub use param::{FileFolder, ParamKind, ParamProblem, ParamSpec, TextRule};
pub use registry::{Registry, RegistryError};
pub use rehearsal::{DeviceNeed, NodeTime, Rehearsal, StageNeed, WorkflowNeed};
pub use socket::{SocketSpec, SocketType};
pub use typed::{Choice, Declared, ParamType, Params};
pub use value::{Handle, Value};
