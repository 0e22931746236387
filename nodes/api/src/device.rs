//! Which device a run's models execute on.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The device given on the command line (`cpu`, `cuda`, `cuda:1`): model nodes place weights and
/// run kernels there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum DeviceSpec {
    /// The host processor.
    #[default]
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

/// A device name that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device \"{0}\": expected cpu, cuda or cuda:N (N a device number such as 0)")]
pub struct DeviceParseError(pub String);

impl FromStr for DeviceSpec {
    type Err = DeviceParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|ordinal| ordinal.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceParseError(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(device: DeviceSpec) -> Self {
        device.to_string()
    }
}

/// How much device memory a run may use (`--vram-budget`): every model's weights and every
/// node's working memory together. Models leave the device, least recently used first, and
/// BlockSwap streams more, to stay within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum VramBudget {
    /// What the device has free when a node asks, plus what the run already holds, less a margin
    /// for the driver and the memory pool's fragmentation.
    #[default]
    Auto,
    /// This many mebibytes (never more than the device has).
    Mebibytes(u64),
}

/// A budget that is neither `auto` nor a whole number of MiB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VRAM budget \"{0}\": expected auto or a whole number of MiB above 0, such as 6144")]
pub struct VramBudgetParseError(pub String);

impl FromStr for VramBudget {
    type Err = VramBudgetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            _ => match text.parse::<u64>() {
                Ok(mib) if mib > 0 => Ok(Self::Mebibytes(mib)),
                _ => Err(VramBudgetParseError(text.to_string())),
            },
        }
    }
}

impl fmt::Display for VramBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Mebibytes(mib) => write!(f, "{mib}"),
        }
    }
}

impl From<VramBudget> for String {
    fn from(budget: VramBudget) -> Self {
        budget.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_budgets() {
        assert_eq!("auto".parse(), Ok(VramBudget::Auto));
        assert_eq!("6144".parse(), Ok(VramBudget::Mebibytes(6144)));
        assert_eq!(VramBudget::Mebibytes(4096).to_string(), "4096");
        for bad in ["0", "-1", "4GiB", "", "Auto"] {
            assert!(bad.parse::<VramBudget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_and_prints_device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap().to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }
}
