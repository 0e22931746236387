//! The closed set of types that can flow along a link between two nodes.

use serde::Serialize;
use std::fmt;

/// The type of a socket: what an output produces and what an input or parameter accepts.
///
/// A closed enum rather than strings, so that a typo in a pack is a compile error and the
/// validator can check every link. Names follow ComfyUI's return types (`MODEL`, `CLIP`, ...), so
/// its users read them without translation; an output's name is its type in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SocketType {
    /// A diffusion model handle (UNet plus patches and execution options).
    Model,
    /// The text encoders of a checkpoint.
    Clip,
    /// A variational autoencoder.
    Vae,
    /// Encoded prompt embeddings, with any patches such as ControlNet hints.
    Conditioning,
    /// A batch of latent images.
    Latent,
    /// A batch of images, RGB in 0..1.
    Image,
    /// A batch of single-channel masks in 0..1: where something applies.
    Mask,
    /// A ControlNet model.
    ControlNet,
    /// InstantID's image projection and IP-Adapter weights.
    Instantid,
    /// A face detector and recognition model.
    Faceanalysis,
    /// A whole number.
    Int,
    /// A real number.
    Float,
    /// Text.
    String,
    /// True or false.
    Boolean,
}

impl SocketType {
    /// Every socket type, in declaration order.
    pub const ALL: [SocketType; 14] = [
        Self::Model,
        Self::Clip,
        Self::Vae,
        Self::Conditioning,
        Self::Latent,
        Self::Image,
        Self::Mask,
        Self::ControlNet,
        Self::Instantid,
        Self::Faceanalysis,
        Self::Int,
        Self::Float,
        Self::String,
        Self::Boolean,
    ];

    /// The ComfyUI-style upper-case name, e.g. `CONTROL_NET`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "MODEL",
            Self::Clip => "CLIP",
            Self::Vae => "VAE",
            Self::Conditioning => "CONDITIONING",
            Self::Latent => "LATENT",
            Self::Image => "IMAGE",
            Self::Mask => "MASK",
            Self::ControlNet => "CONTROL_NET",
            Self::Instantid => "INSTANTID",
            Self::Faceanalysis => "FACEANALYSIS",
            Self::Int => "INT",
            Self::Float => "FLOAT",
            Self::String => "STRING",
            Self::Boolean => "BOOLEAN",
        }
    }

    /// The conventional output name for this type: the type's name in lower case.
    pub fn output_name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Clip => "clip",
            Self::Vae => "vae",
            Self::Conditioning => "conditioning",
            Self::Latent => "latent",
            Self::Image => "image",
            Self::Mask => "mask",
            Self::ControlNet => "control_net",
            Self::Instantid => "instantid",
            Self::Faceanalysis => "faceanalysis",
            Self::Int => "int",
            Self::Float => "float",
            Self::String => "string",
            Self::Boolean => "boolean",
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_match_display_names() {
        for socket in SocketType::ALL {
            let json = serde_json::to_value(socket).unwrap();
            assert_eq!(json, serde_json::Value::String(socket.name().to_string()));
            assert_eq!(socket.output_name(), socket.name().to_lowercase());
        }
    }
}
