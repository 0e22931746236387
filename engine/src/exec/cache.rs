//! The output cache: a node's outputs are reused when its type, version, params and everything
//! upstream are unchanged, as in ComfyUI's input-signature cache.
//!
//! A step's signature hashes its type, version and literal params with the signatures of the
//! steps it reads from, so node ids never matter and a change anywhere upstream changes every
//! signature below it. Steps that opt out of caching get a signature unique to the run, which
//! makes everything downstream of them recompute too. A step that reads files adds their identity
//! (see `file_identity`), so a file changed on disk is read again.

use crate::plan::Plan;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use swapgraph_node_api::Value;

/// A step's input signature.
pub type Signature = u64;

/// The signatures of one run's steps, computed as each step becomes ready: a step's signature
/// needs its producers' and the identity of the files it reads, which may be named by a linked
/// value known only once its producer ran.
pub struct Signatures {
    run_id: u64,
    signed: Vec<Option<Signature>>,
}

impl Signatures {
    /// No step signed yet; `run_id` salts the steps that opt out of caching.
    pub fn new(plan: &Plan, run_id: u64) -> Self {
        Self {
            run_id,
            signed: vec![None; plan.steps.len()],
        }
    }

    /// Signs step `index` of `plan`, whose producers are all signed, with `files_read`, the
    /// identity of the files it reads.
    pub fn sign(&mut self, plan: &Plan, index: usize, files_read: u64) -> Signature {
        let step = &plan.steps[index];
        let descriptor = step.node_type.descriptor();
        let mut hasher = DefaultHasher::new();
        descriptor.type_name.hash(&mut hasher);
        descriptor.version.hash(&mut hasher);
        if !descriptor.cacheable {
            self.run_id.hash(&mut hasher);
        }
        let mut literals: Vec<_> = step.literals.iter().collect();
        literals.sort_by_key(|(name, _)| *name);
        for (name, value) in literals {
            name.hash(&mut hasher);
            hash_literal(value, &mut hasher);
        }
        let mut inputs: Vec<_> = step.inputs.iter().collect();
        inputs.sort_by_key(|input| input.arg);
        for input in inputs {
            input.arg.hash(&mut hasher);
            self.signed[input.step]
                .expect("producers are signed before their consumers")
                .hash(&mut hasher);
            input.output.hash(&mut hasher);
        }
        files_read.hash(&mut hasher);
        let signature = hasher.finish();
        self.signed[index] = Some(signature);
        signature
    }

    /// The signature of step `index`, once signed.
    pub fn get(&self, index: usize) -> Option<Signature> {
        self.signed[index]
    }

    /// Each signed step's index and signature.
    pub fn signed(&self) -> impl Iterator<Item = (usize, Signature)> + '_ {
        self.signed
            .iter()
            .enumerate()
            .filter_map(|(index, signature)| signature.map(|s| (index, s)))
    }
}

fn hash_literal(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Int(v) => (0u8, v).hash(hasher),
        Value::Float(v) => (1u8, v.to_bits()).hash(hasher),
        Value::String(v) => (2u8, v).hash(hasher),
        Value::Boolean(v) => (3u8, v).hash(hasher),
        // Literals are never handles; hash the type so the match stays total.
        Value::Handle(h) => (4u8, h.socket_type()).hash(hasher),
    }
}

/// Outputs of earlier runs by signature. After each run only the entries that run used are
/// kept, so a replaced checkpoint is freed instead of piling up.
#[derive(Default)]
pub struct OutputCache {
    entries: Mutex<HashMap<Signature, Arc<[Value]>>>,
}

impl OutputCache {
    /// The cached outputs for `signature`.
    pub fn get(&self, signature: Signature) -> Option<Arc<[Value]>> {
        self.lock().get(&signature).cloned()
    }

    /// Stores outputs under `signature`.
    pub fn insert(&self, signature: Signature, outputs: Arc<[Value]>) {
        self.lock().insert(signature, outputs);
    }

    /// Drops every entry whose signature is not in `used`.
    pub fn retain_only(&self, used: &[Signature]) {
        let used: HashSet<&Signature> = used.iter().collect();
        self.lock().retain(|signature, _| used.contains(signature));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Signature, Arc<[Value]>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
