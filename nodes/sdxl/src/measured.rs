//! Device-memory measurements made once per card, driver, build and shape: what a UNet step's
//! activations or a VAE's working memory take. A process keeps them in memory (the check before
//! a run measures, the run reuses it), and the CUDA build keeps them on disk as well
//! (`$XDG_CACHE_HOME/swapgraph/measurements`, else `~/.cache/...`), so a later run reads them
//! instead of measuring again: part of the one-off work before the first step.

use candle_core::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
#[cfg(feature = "cuda")]
use swapgraph_model::disk_cache::CacheFile;

/// Measurements of one kind, keyed by what they were measured for.
pub struct Measured<V> {
    /// The name of their files on disk, which only the CUDA build keeps.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kind: &'static str,
    memo: Mutex<Option<HashMap<String, V>>>,
}

impl<V: Clone + Serialize + DeserializeOwned> Measured<V> {
    /// No measurements of `kind` (the name of their files on disk) yet.
    pub const fn new(kind: &'static str) -> Self {
        Self {
            kind,
            memo: Mutex::new(None),
        }
    }

    /// The measurement `key` names on `device`: this process's, else the one kept on disk for
    /// this card, driver and build, else what `measure` gives (then kept in both).
    ///
    /// # Errors
    /// Whatever `measure` returns.
    pub fn get_or_measure<E>(
        &self,
        device: &Device,
        key: &str,
        measure: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let key = format!("{key} {:?}", device.location());
        if let Some(value) = self.remembered(&key) {
            return Ok(Some(value));
        }
        #[cfg(feature = "cuda")]
        let file = disk_file(self.kind, &key, device);
        #[cfg(feature = "cuda")]
        if let Some(value) = file
            .as_ref()
            .and_then(CacheFile::read)
            .and_then(|text| serde_json::from_str::<V>(&text).ok())
        {
            self.remember(key, value.clone());
            return Ok(Some(value));
        }
        let measured = measure()?;
        if let Some(value) = &measured {
            #[cfg(feature = "cuda")]
            if let (Some(file), Ok(text)) = (&file, serde_json::to_string(value)) {
                file.write(&text);
            }
            self.remember(key, value.clone());
        }
        Ok(measured)
    }

    fn remembered(&self, key: &str) -> Option<V> {
        let memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        memo.as_ref().and_then(|memo| memo.get(key).cloned())
    }

    fn remember(&self, key: String, value: V) {
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        memo.get_or_insert_with(HashMap::new).insert(key, value);
    }
}

/// The file a measurement of `kind` for `key` on `device` is kept in: none where the device
/// cannot be told (the CPU, whose measurements are never made) or without a cache folder.
#[cfg(feature = "cuda")]
fn disk_file(kind: &str, key: &str, device: &Device) -> Option<CacheFile> {
    let info = swapgraph_model::device_info(device)?;
    let cache = swapgraph_model::disk_cache::DiskCache::in_user_cache("measurements")?;
    let driver = info.driver.unwrap_or_default();
    Some(cache.file(kind, &[key, &info.name, &info.driver_cuda, &driver, &build()]))
}

/// This build, as the running executable's size and modification time: a rebuilt binary
/// measures again.
#[cfg(feature = "cuda")]
fn build() -> String {
    std::env::current_exe()
        .and_then(|path| path.metadata())
        .map(|meta| format!("{} {:?}", meta.len(), meta.modified().ok()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_measurement_is_made_once_per_key_and_device_and_failures_are_not_kept() {
        static STEPS: Measured<u64> = Measured::new("test-steps");
        let made = Cell::new(0);
        let measure = |value: u64| {
            made.set(made.get() + 1);
            Ok::<_, String>(Some(value))
        };
        let cpu = Device::Cpu;
        assert_eq!(STEPS.get_or_measure(&cpu, "a", || measure(7)), Ok(Some(7)));
        assert_eq!(STEPS.get_or_measure(&cpu, "a", || measure(8)), Ok(Some(7)));
        assert_eq!(made.get(), 1, "measured once");
        assert_eq!(STEPS.get_or_measure(&cpu, "b", || measure(9)), Ok(Some(9)));
        assert_eq!(made.get(), 2, "another key measures");
        assert_eq!(
            STEPS.get_or_measure(&cpu, "c", || Err("out of memory".to_string())),
            Err("out of memory".into())
        );
        assert_eq!(STEPS.get_or_measure(&cpu, "c", || Ok::<_, String>(None)), Ok(None));
        assert_eq!(
            STEPS.get_or_measure(&cpu, "c", || measure(3)),
            Ok(Some(3)),
            "nothing kept for a failure"
        );
    }
}
