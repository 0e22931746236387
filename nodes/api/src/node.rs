//! The trait every node type implements.

use crate::{Args, NodeDescriptor, NodeError, Rehearsal, RunContext, Value};

/// A kind of node: its static descriptor and the code that turns arguments into outputs.
///
/// The engine guarantees that `run` receives every required input and every parameter (given,
/// linked or defaulted) with the declared types; it checks that the returned values match the
/// declared outputs in number and type. `run` is called on a blocking worker thread and may take
/// long; it should call [`RunContext::check_cancelled`] between steps.
pub trait NodeType: Send + Sync {
    /// The node's static description.
    fn descriptor(&self) -> &NodeDescriptor;

    /// Computes the outputs, in the order the descriptor declares them.
    ///
    /// # Errors
    /// A [`NodeError`] saying why the outputs could not be produced.
    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError>;

    /// Rehearses the node before a run (see [`Rehearsal`]): a node whose work on the device is
    /// heavy stands in for it, saying what memory that work needs; the others, and by default
    /// every node, do their work. The arguments may be stand-ins from earlier nodes.
    ///
    /// # Errors
    /// A [`NodeError`] saying why the node could not be rehearsed.
    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        self.run(args, ctx).map(Rehearsal::Ran)
    }
}
