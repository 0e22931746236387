//! The `swapgraph` binary: registers the node packs and hands over to the command line.

use std::process::ExitCode;
use swapgraph_node_api::Registry;

fn main() -> ExitCode {
    let mut registry = Registry::new();
    let packs = swapgraph_utils::register(&mut registry)
        .and_then(|()| swapgraph_sdxl::register(&mut registry))
        .and_then(|()| swapgraph_image::register(&mut registry))
        .and_then(|()| swapgraph_blockswap::register(&mut registry))
        .and_then(|()| swapgraph_instantid::register(&mut registry));
    if let Err(error) = packs {
        eprintln!("error: node packs conflict: {error}");
        return ExitCode::FAILURE;
    }
    swapgraph::cli::main(registry)
}
