//! The `swapgraph` binary: registers the node packs and hands over to the command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let packs = swapgraph::packs::packs();
    match swapgraph::packs::registry_of(&packs) {
        Ok(registry) => swapgraph::cli::main(registry, &packs),
        Err(error) => {
            eprintln!("error: node packs conflict: {error}");
            ExitCode::FAILURE
        }
    }
}
