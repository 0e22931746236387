//! `--device` of `serve` and `worker`: one device, a comma-separated list, or every GPU.

use std::str::FromStr;
use swapgraph_node_api::DeviceSpec;

/// The devices jobs run on, one executor each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList(pub Vec<DeviceSpec>);

impl FromStr for DeviceList {
    type Err = String;

    /// `cpu`, `cuda`, `cuda:N`, a list such as `cuda:0,cuda:2`, or `cuda:all` (every GPU the
    /// driver shows).
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "cuda:all" {
            let count = swapgraph_model::gpu_count().map_err(|e| e.to_string())?;
            if count == 0 {
                return Err("cuda:all: the driver shows no GPU".into());
            }
            return Ok(Self((0..count).map(DeviceSpec::Cuda).collect()));
        }
        let devices = text
            .split(',')
            .map(|device| device.trim().parse::<DeviceSpec>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(gpu) = devices.iter().find(|device| matches!(device, DeviceSpec::Cuda(_))) {
            if !cfg!(feature = "cuda") {
                return Err(format!(
                    "{gpu}: this build of swapgraph runs on the CPU only; build with --features cuda"
                ));
            }
        }
        Ok(Self(devices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_devices_parse() {
        assert_eq!("cpu".parse(), Ok(DeviceList(vec![DeviceSpec::Cpu])));
        if cfg!(feature = "cuda") {
            assert_eq!(
                "cuda:0, cuda:2".parse(),
                Ok(DeviceList(vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(2)]))
            );
        } else {
            let error = "cpu,cuda:1".parse::<DeviceList>().unwrap_err();
            assert!(
                error.contains("cuda:1: this build of swapgraph runs on the CPU only"),
                "{error}"
            );
        }
        assert_eq!("cpu,cpu".parse::<DeviceList>().map(|list| list.0.len()), Ok(2));
    }

    #[test]
    fn a_bad_device_in_a_list_is_named() {
        let error = "cpu,gpu".parse::<DeviceList>().unwrap_err();
        assert!(error.contains("\"gpu\""), "{error}");
    }
}
