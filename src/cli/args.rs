//! Command-line arguments.

use super::devices::DeviceList;
use crate::shared::NatsArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use swapgraph_node_api::{DeviceSpec, FileRoots, VramBudget};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    a node failed while running, or the workflow does not fit the device (nothing ran)
  2    command-line usage error
  3    the workflow cannot be read or is invalid (nothing ran)
  130  cancelled (Ctrl-C)";

/// Run node-graph workflows for diffusion models, with BlockSwap weight streaming.
#[derive(Debug, Parser)]
#[command(name = "swapgraph", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and run a workflow file.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Check a workflow file and print its execution plan, without running it.
    #[command(after_help = EXIT_CODES)]
    Validate(ValidateArgs),
    /// List the node types this build knows, with inputs, params and outputs.
    Nodes(NodesArgs),
    /// Convert a ComfyUI workflow (JSON: what ComfyUI's "Save" or "Export (API)" writes) to a
    /// workflow file, and report what in it swapgraph cannot run. `run` and `validate` also take
    /// such a file directly.
    #[command(after_help = EXIT_CODES)]
    Import(ImportArgs),
    /// Serve the browser editor and the HTTP API (jobs run one at a time on each device; loaded
    /// models stay cached between jobs), or put jobs on a shared queue on NATS (--nats).
    /// Listens on loopback unless told otherwise.
    Serve(ServeArgs),
    /// Run jobs from the shared queue on a NATS server (what `serve --nats` queues), on every
    /// device given. Listens on nothing; needs only the NATS server and the models folder.
    Worker(WorkerArgs),
}

impl Command {
    /// The `--set-type` overrides of a command that runs or checks a workflow.
    pub fn set_type(&mut self) -> Option<&mut Vec<String>> {
        match self {
            Self::Run(args) => Some(&mut args.workflow.set_type),
            Self::Validate(args) => Some(&mut args.workflow.set_type),
            Self::Nodes(_) | Self::Import(_) | Self::Serve(_) | Self::Worker(_) => None,
        }
    }
}

/// The workflow file and its overrides.
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    /// The workflow file: YAML, or a ComfyUI workflow (JSON, editor or API format).
    pub workflow: PathBuf,
    /// Override a param: node.param=value (value read as YAML: 30, 2.5, true, euler, "a cat").
    /// Repeatable; replaces a literal or a link of that name.
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE")]
    pub set: Vec<String>,
    /// Override a param on every node of a type: Type.param=value, e.g.
    /// --set-type BlockSwap.preset=low_vram.json applies a BlockSwap preset file to all BlockSwap
    /// nodes. Repeatable; applied after --set, and before the packs' flags below.
    #[arg(long = "set-type", value_name = "TYPE.PARAM=VALUE")]
    pub set_type: Vec<String>,
}

/// Arguments of `swapgraph run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workflow: WorkflowArgs,
    /// Where models run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// How much device memory the run may use, in MiB, or auto: what the device has free, less
    /// a margin. Models leave the device when others need the room, BlockSwap streams more and
    /// the VAE decodes in tiles to stay within it.
    #[arg(long, default_value = "auto", value_name = "auto|MiB")]
    pub vram_budget: VramBudget,
    #[command(flatten)]
    pub folders: FolderArgs,
    /// Run the workflow this many times in one process; later runs reuse cached results of
    /// unchanged nodes (a loaded checkpoint is not loaded again).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// How many independent nodes may run at once.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// The folders a run's files resolve in. A workflow names models and inputs relative to them;
/// a name that leads out (`..`, an absolute path elsewhere, a symlink out) is refused.
#[derive(Debug, Args)]
pub struct FolderArgs {
    /// Folder that model names (checkpoints, InstantID, ControlNet, face models) resolve in.
    #[arg(long, default_value = ".")]
    pub models_dir: PathBuf,
    /// Folder that input names (images, masks, BlockSwap presets) resolve in.
    #[arg(long, default_value = ".")]
    pub input_dir: PathBuf,
    /// Folder for saved outputs (created if missing).
    #[arg(long, default_value = "output")]
    pub output_dir: PathBuf,
}

impl FolderArgs {
    /// The folders as the engine takes them, after checking that the models and input folders
    /// exist. The output folder is created by the first node that writes.
    ///
    /// # Errors
    /// The flag and the problem, for the user.
    pub fn roots(&self) -> Result<FileRoots, String> {
        for (flag, dir) in [("--models-dir", &self.models_dir), ("--input-dir", &self.input_dir)] {
            if !dir.is_dir() {
                return Err(format!("{flag} {}: not a folder", dir.display()));
            }
        }
        Ok(FileRoots {
            models: self.models_dir.clone(),
            inputs: self.input_dir.clone(),
            outputs: self.output_dir.clone(),
        })
    }
}

/// Arguments of `swapgraph validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub workflow: WorkflowArgs,
    /// Print the plan or the problems as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `swapgraph import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The ComfyUI workflow (JSON, editor or API format).
    pub file: std::path::PathBuf,
    /// Where to write the workflow YAML; stdout when left out.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
}

/// Arguments of `swapgraph nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Show only this node type.
    pub node_type: Option<String>,
    /// Print the descriptors as JSON (the data the editor's palette uses).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `swapgraph serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Only loopback is safe: the API runs workflows and writes files.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8188)]
    pub port: u16,
    /// Where jobs run: cpu, cuda, cuda:N, a comma-separated list (cuda:0,cuda:2) or cuda:all,
    /// one job at a time on each device, each with its own cache of loaded models. A job goes
    /// to a free device that holds its models, else to the least loaded free one. A device
    /// named twice runs two jobs at once (cpu,cpu).
    #[arg(long, default_value = "cpu", value_name = "DEVICES")]
    pub device: DeviceList,
    /// How much device memory each job may use, in MiB, or auto: what the device has free, less
    /// a margin. Models leave the device when others need the room, BlockSwap streams more and
    /// the VAE decodes in tiles to stay within it.
    #[arg(long, default_value = "auto", value_name = "auto|MiB")]
    pub vram_budget: VramBudget,
    #[command(flatten)]
    pub folders: FolderArgs,
    // --nats URL: jobs go to the shared queue of that NATS server (with JetStream) instead of
    // running here; `swapgraph worker` processes on any machine run them.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// With --nats: how many times a job may be started (its worker failing or dying each
    /// time) before it fails with every attempt's reason.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Folder of workflow files the editor opens and saves.
    #[arg(long, default_value = "workflows")]
    pub workflows_dir: PathBuf,
    /// Largest request body accepted, in KiB.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_kib: u64,
    /// Previews of each sampler step for ComfyUI's websocket clients, as binary PNG frames: none,
    /// or latent2rgb (auto is the same). The editor shows previews either way.
    #[arg(long, default_value = "none", value_parser = ["none", "auto", "latent2rgb"])]
    pub preview_method: String,
}

/// Arguments of `swapgraph worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The devices jobs run on, one job at a time each: cpu, cuda, cuda:N, a comma-separated
    /// list or cuda:all.
    #[arg(long, default_value = "cpu", value_name = "DEVICES")]
    pub device: DeviceList,
    /// How much device memory each job may use, in MiB, or auto.
    #[arg(long, default_value = "auto", value_name = "auto|MiB")]
    pub vram_budget: VramBudget,
    /// Folder that model names resolve in; a workflow naming a file outside it is refused as
    /// `run` refuses it.
    #[arg(long, default_value = ".")]
    pub models_dir: PathBuf,
    /// Where each job's inputs and outputs are kept while it runs (removed after).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("swapgraph-worker"))]
    pub scratch_dir: PathBuf,
    /// The worker's name in job records (default: the host name and the process id).
    #[arg(long)]
    pub name: Option<String>,
    /// Send a preview of each sampler step to the servers' clients (each copies the step's
    /// latents to the host).
    #[arg(long)]
    pub previews: bool,
}
