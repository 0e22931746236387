//! The `swapgraph` binary: registers the node packs and hands over to the command line.

use std::process::ExitCode;
use swapgraph_node_api::Registry;

fn main() -> ExitCode {
    let mut registry = Registry::new();
    if let Err(error) = swapgraph_utils::register(&mut registry) {
        eprintln!("error: node packs conflict: {error}");
        return ExitCode::FAILURE;
    }
    swapgraph::cli::main(registry)
}
