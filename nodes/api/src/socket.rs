//! The types that flow along a link between two nodes: the core ones every pack shares, and the
//! ones a pack defines for its own values and registers with the [`crate::Registry`].

use serde::{Serialize, Serializer};
use std::fmt;

/// The type of a socket: what an output produces and what an input or parameter accepts.
///
/// A constant rather than a string at each use, so that a typo in a pack is a compile error and
/// the validator can check every link. Names follow ComfyUI's return types (`MODEL`, `CLIP`, ...),
/// so its users read them without translation; an output's name is its type in lower case. A
/// pack that brings a new kind of value declares its type once
/// (`pub const CONTROL_NET: SocketType = SocketType::new("CONTROL_NET", "control_net");`) and
/// registers it with a [`SocketSpec`] before the nodes that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketType {
    name: &'static str,
    output_name: &'static str,
}

impl SocketType {
    /// A socket type named `name` (upper case, ComfyUI's style) whose outputs are called
    /// `output_name` (the name in lower case).
    pub const fn new(name: &'static str, output_name: &'static str) -> Self {
        Self { name, output_name }
    }

    /// A diffusion model handle (UNet plus patches and execution options).
    pub const MODEL: Self = Self::new("MODEL", "model");
    /// The text encoders of a checkpoint.
    pub const CLIP: Self = Self::new("CLIP", "clip");
    /// A variational autoencoder.
    pub const VAE: Self = Self::new("VAE", "vae");
    /// Encoded prompt embeddings, with any patches such as ControlNet hints.
    pub const CONDITIONING: Self = Self::new("CONDITIONING", "conditioning");
    /// A batch of latent images.
    pub const LATENT: Self = Self::new("LATENT", "latent");
    /// A batch of images, RGB in 0..1.
    pub const IMAGE: Self = Self::new("IMAGE", "image");
    /// A batch of single-channel masks in 0..1: where something applies.
    pub const MASK: Self = Self::new("MASK", "mask");
    /// A whole number.
    pub const INT: Self = Self::new("INT", "int");
    /// A real number.
    pub const FLOAT: Self = Self::new("FLOAT", "float");
    /// Text.
    pub const STRING: Self = Self::new("STRING", "string");
    /// True or false.
    pub const BOOLEAN: Self = Self::new("BOOLEAN", "boolean");

    /// The upper-case name, e.g. `CONTROL_NET`.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The conventional output name for this type: the type's name in lower case.
    pub fn output_name(self) -> &'static str {
        self.output_name
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl Serialize for SocketType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name)
    }
}

/// A socket type as the registry knows it: how the editor draws it and which other types'
/// outputs it also takes.
#[derive(Clone, Debug, Serialize)]
pub struct SocketSpec {
    /// The type.
    #[serde(rename = "name")]
    pub socket: SocketType,
    /// The editor's colour for its sockets and links, as CSS (`#rrggbb`).
    pub colour: &'static str,
    /// Other types whose outputs an input of this type takes as they are.
    pub accepts: &'static [SocketType],
    /// One sentence for users: what flows along it.
    pub description: &'static str,
}

impl SocketSpec {
    /// A type drawn in `colour` that takes only its own outputs.
    pub const fn new(socket: SocketType, colour: &'static str, description: &'static str) -> Self {
        Self {
            socket,
            colour,
            accepts: &[],
            description,
        }
    }

    /// The same type, also taking outputs of `others`.
    pub const fn accepting(self, others: &'static [SocketType]) -> Self {
        Self {
            accepts: others,
            ..self
        }
    }
}

/// The core socket types, which every registry has; colours follow ComfyUI's where it has one.
pub(crate) const CORE: [SocketSpec; 11] = [
    SocketSpec::new(
        SocketType::MODEL,
        "#b39ddb",
        "A diffusion model, with its placement and patches.",
    ),
    SocketSpec::new(SocketType::CLIP, "#ffd500", "A checkpoint's text encoders."),
    SocketSpec::new(SocketType::VAE, "#ff6e6e", "A variational autoencoder."),
    SocketSpec::new(
        SocketType::CONDITIONING,
        "#ffa931",
        "Encoded prompts with what steers them.",
    ),
    SocketSpec::new(SocketType::LATENT, "#ff9cf9", "A batch of latent images."),
    SocketSpec::new(SocketType::IMAGE, "#64b5f6", "A batch of RGB images."),
    SocketSpec::new(SocketType::MASK, "#81c784", "A batch of masks."),
    SocketSpec::new(SocketType::INT, "#4db6ac", "A whole number."),
    SocketSpec::new(SocketType::FLOAT, "#aed581", "A real number."),
    SocketSpec::new(SocketType::STRING, "#e0e0e0", "Text."),
    SocketSpec::new(SocketType::BOOLEAN, "#90a4ae", "True or false."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_types_serialize_as_their_names_and_output_in_lower_case() {
        for spec in CORE {
            let json = serde_json::to_value(spec.socket).unwrap();
            assert_eq!(json, serde_json::Value::String(spec.socket.name().to_string()));
            assert_eq!(spec.socket.output_name(), spec.socket.name().to_lowercase());
        }
    }
}
