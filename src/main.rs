//! The `swapgraph` binary: registers the node packs and hands over to the command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    match swapgraph::packs::registry() {
        Ok(registry) => swapgraph::cli::main(registry),
        Err(error) => {
            eprintln!("error: node packs conflict: {error}");
            ExitCode::FAILURE
        }
    }
}
