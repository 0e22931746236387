//! Integration tests of the engine: validation reports, plans, execution, the CLI, the server
//! and hostile input. One test binary for the whole area keeps link time down.

mod engine {
    pub mod cli;
    pub mod clip_layers;
    pub mod comfy_api;
    pub mod comfyui;
    pub mod editor;
    pub mod execution;
    pub mod fixtures;
    pub mod hostile;
    pub mod inpainting;
    pub mod latent_batches;
    pub mod loaders;
    pub mod loopback;
    pub mod lora;
    pub mod plans;
    pub mod regions;
    pub mod rehearsal;
    pub mod server;
    pub mod shared_queue;
    pub mod validation;
    pub mod workflows;
}
