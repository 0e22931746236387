//! The seed's preset file: the JSON keys its users already have, read into [`SwapSettings`].
//!
//! ```json
//! { "enable_blockswap": true, "blockswap_debug": false, "blockswap_blocks": 2,
//!   "blockswap_down": true, "blockswap_mid": true, "blockswap_up": true,
//!   "blockswap_nonblocking": true }
//! ```

use crate::settings::SwapSettings;
use std::path::Path;

/// Why a preset file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// The file cannot be read.
    #[error("cannot read BlockSwap preset {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A key has the wrong type or is unknown.
    #[error("BlockSwap preset {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A preset: whether BlockSwap is on, and the settings it changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// `enable_blockswap`: `false` passes the model through unchanged.
    pub enabled: bool,
    /// The settings, starting from those given and changed by the preset's keys.
    pub settings: SwapSettings,
}

const KEYS: [&str; 7] = [
    "enable_blockswap",
    "blockswap_debug",
    "blockswap_blocks",
    "blockswap_down",
    "blockswap_mid",
    "blockswap_up",
    "blockswap_nonblocking",
];

/// Reads a preset file over `base`.
///
/// # Errors
/// [`PresetError`] for an unreadable file, JSON that is not an object, an unknown key or a value
/// of the wrong type.
pub fn read(path: &Path, base: SwapSettings) -> Result<Preset, PresetError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PresetError::Unreadable {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse(&text, base).map_err(|message| PresetError::Invalid { path: shown, message })
}

/// Parses preset JSON over `base`; the error names the key.
pub fn parse(text: &str, base: SwapSettings) -> Result<Preset, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("expected a JSON object of blockswap_* keys")?;
    let mut preset = Preset {
        enabled: true,
        settings: base,
    };
    for (key, value) in object {
        let flag = || {
            value
                .as_bool()
                .ok_or(format!("\"{key}\" must be true or false, found {value}"))
        };
        match key.as_str() {
            "enable_blockswap" => preset.enabled = flag()?,
            "blockswap_debug" => preset.settings.debug = flag()?,
            "blockswap_down" => preset.settings.swap_down = flag()?,
            "blockswap_mid" => preset.settings.swap_mid = flag()?,
            "blockswap_up" => preset.settings.swap_up = flag()?,
            "blockswap_nonblocking" => preset.settings.non_blocking = flag()?,
            "blockswap_blocks" => {
                let blocks = value.as_u64().filter(|b| *b <= 8);
                preset.settings.blocks_to_swap = blocks.ok_or(format!(
                    "\"blockswap_blocks\" must be a whole number from 0 to 8, found {value}"
                ))? as usize;
            }
            other => return Err(format!("unknown key \"{other}\"; the keys are {}", KEYS.join(", "))),
        }
    }
    Ok(preset)
}

/// `settings` as preset JSON with the seed's keys.
pub fn to_json(enabled: bool, settings: &SwapSettings) -> String {
    let value = serde_json::json!({
        "enable_blockswap": enabled,
        "blockswap_debug": settings.debug,
        "blockswap_blocks": settings.blocks_to_swap,
        "blockswap_down": settings.swap_down,
        "blockswap_mid": settings.swap_mid,
        "blockswap_up": settings.swap_up,
        "blockswap_nonblocking": settings.non_blocking,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_keys_and_round_trips() {
        let text = r#"{"enable_blockswap": true, "blockswap_debug": true, "blockswap_blocks": 3,
            "blockswap_down": false, "blockswap_mid": true, "blockswap_up": true, "blockswap_nonblocking": false}"#;
        let preset = parse(text, SwapSettings::default()).unwrap();
        assert!(preset.enabled && preset.settings.debug && !preset.settings.swap_down && !preset.settings.non_blocking);
        assert_eq!(preset.settings.blocks_to_swap, 3);
        assert_eq!(
            parse(&to_json(true, &preset.settings), SwapSettings::default()).unwrap(),
            preset
        );
    }

    #[test]
    fn names_the_bad_key() {
        assert!(parse(r#"{"blockswap_blocks": "two"}"#, SwapSettings::default())
            .unwrap_err()
            .contains("blockswap_blocks"));
        assert!(parse(r#"{"blockswap_blocks": 9}"#, SwapSettings::default())
            .unwrap_err()
            .contains("0 to 8"));
        assert!(parse(r#"{"blockswap_upp": true}"#, SwapSettings::default())
            .unwrap_err()
            .contains("unknown key \"blockswap_upp\""));
        assert!(parse("[1]", SwapSettings::default()).is_err());
    }
}
