//! Which of the server's devices takes the next job: one that already holds the job's models
//! when one is free, so a queue of mixed workflows does not load models for every job; else the
//! free device that shares most of them; else the least loaded free one.

/// A device as placement sees it.
#[derive(Clone, Debug, Default)]
pub struct DeviceSlot {
    /// Whether a job runs there now.
    pub busy: bool,
    /// The models (file or built-in names) of the last job it ran: its cache holds them.
    pub holds: Vec<String>,
    /// How many jobs it has taken.
    pub jobs_taken: u64,
}

/// The free device for a job that loads `models`, or `None` when every device is busy.
pub fn choose(models: &[String], slots: &[DeviceSlot]) -> Option<usize> {
    let shared = |slot: &DeviceSlot| models.iter().filter(|model| slot.holds.contains(model)).count();
    slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| !slot.busy)
        // Most models held first, then the fewest jobs taken, then the lowest index.
        .min_by_key(|(index, slot)| (std::cmp::Reverse(shared(slot)), slot.jobs_taken, *index))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(busy: bool, holds: &[&str], jobs_taken: u64) -> DeviceSlot {
        DeviceSlot {
            busy,
            holds: holds.iter().map(|name| name.to_string()).collect(),
            jobs_taken,
        }
    }

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_free_device_holding_the_models_is_chosen_over_a_less_loaded_one() {
        let slots = [slot(false, &[], 0), slot(false, &["a.safetensors"], 5)];
        assert_eq!(choose(&models(&["a.safetensors"]), &slots), Some(1));
    }

    #[test]
    fn the_least_loaded_free_device_takes_a_job_none_holds() {
        let slots = [slot(false, &["a"], 3), slot(true, &["b"], 0), slot(false, &["c"], 1)];
        assert_eq!(choose(&models(&["b"]), &slots), Some(2));
    }

    #[test]
    fn a_busy_device_is_never_chosen() {
        let slots = [slot(true, &["a"], 0), slot(true, &[], 0)];
        assert_eq!(choose(&models(&["a"]), &slots), None);
    }

    #[test]
    fn the_device_sharing_most_models_wins() {
        let slots = [slot(false, &["ckpt"], 0), slot(false, &["ckpt", "controlnet"], 9)];
        assert_eq!(choose(&models(&["ckpt", "controlnet"]), &slots), Some(1));
    }
}
