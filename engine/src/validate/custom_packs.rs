//! The ComfyUI custom node packs that shared workflows most often need, told apart by their
//! node type names, so that a workflow using one is refused with the pack named rather than
//! only its unknown types.

/// How a pack's type names are recognised.
enum Names {
    Exactly(&'static [&'static str]),
    StartingWith(&'static str),
    EndingWith(&'static str),
}

/// Pack names, with the type names that give them away.
const PACKS: &[(&str, Names)] = &[
    ("ComfyUI_IPAdapter_plus", Names::StartingWith("IPAdapter")),
    ("ComfyUI_IPAdapter_plus", Names::Exactly(&["PrepImageForClipVision"])),
    (
        "ComfyUI_InstantID",
        Names::Exactly(&[
            "ApplyInstantIDAdvanced",
            "ApplyInstantIDControlNet",
            "InstantIDAttentionPatch",
        ]),
    ),
    ("ComfyUI-Impact-Pack", Names::StartingWith("Impact")),
    (
        "ComfyUI-Impact-Pack",
        Names::Exactly(&[
            "FaceDetailer",
            "DetailerForEach",
            "SAMLoader",
            "BboxDetectorSEGS",
            "SEGSDetailer",
        ]),
    ),
    (
        "ComfyUI-Impact-Subpack",
        Names::Exactly(&["UltralyticsDetectorProvider"]),
    ),
    ("ComfyUI_Comfyroll_CustomNodes", Names::StartingWith("CR ")),
    ("ComfyUI-Easy-Use", Names::StartingWith("easy ")),
    ("rgthree-comfy", Names::EndingWith("(rgthree)")),
    ("ComfyUI-Custom-Scripts", Names::EndingWith("|pysssss")),
    ("ComfyUI_essentials", Names::EndingWith("+")),
    ("ComfyUI-KJNodes", Names::EndingWith("KJ")),
    ("ComfyUI-GGUF", Names::EndingWith("GGUF")),
    ("ComfyUI-GGUF", Names::StartingWith("UnetLoaderGGUF")),
    ("comfyui_controlnet_aux", Names::EndingWith("Preprocessor")),
    ("comfyui_controlnet_aux", Names::StartingWith("AIO_Preprocessor")),
    ("ComfyUI-Advanced-ControlNet", Names::StartingWith("ACN_")),
    ("ComfyUI-AnimateDiff-Evolved", Names::StartingWith("ADE_")),
    ("ComfyUI-VideoHelperSuite", Names::StartingWith("VHS_")),
    (
        "ComfyUI_UltimateSDUpscale",
        Names::Exactly(&["UltimateSDUpscale", "UltimateSDUpscaleNoUpscale"]),
    ),
    (
        "efficiency-nodes-comfyui",
        Names::Exactly(&["Efficient Loader", "KSampler (Efficient)", "KSampler Adv. (Efficient)"]),
    ),
];

/// ` (from the custom node pack P, which swapgraph does not have)` for a known pack.
pub fn from_pack(pack: &Option<&'static str>) -> String {
    pack.map(|pack| format!(" (from the custom node pack {pack}, which swapgraph does not have)"))
        .unwrap_or_default()
}

/// The custom node pack a node type of that name comes from, where it is a well-known one.
pub fn pack_of(type_name: &str) -> Option<&'static str> {
    PACKS
        .iter()
        .find(|(_, names)| match names {
            Names::Exactly(types) => types.contains(&type_name),
            Names::StartingWith(prefix) => type_name.starts_with(prefix),
            Names::EndingWith(suffix) => type_name.ends_with(suffix),
        })
        .map(|(pack, _)| *pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_packs_are_named_by_their_type_names() {
        for (type_name, pack) in [
            ("IPAdapterAdvanced", Some("ComfyUI_IPAdapter_plus")),
            ("CR Apply LoRA Stack", Some("ComfyUI_Comfyroll_CustomNodes")),
            ("Power Lora Loader (rgthree)", Some("rgthree-comfy")),
            ("ShowText|pysssss", Some("ComfyUI-Custom-Scripts")),
            ("ImageResize+", Some("ComfyUI_essentials")),
            ("DWPreprocessor", Some("comfyui_controlnet_aux")),
            ("FaceDetailer", Some("ComfyUI-Impact-Pack")),
            ("KSamplerX", None),
        ] {
            assert_eq!(pack_of(type_name), pack, "{type_name}");
        }
    }
}
