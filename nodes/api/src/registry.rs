//! The registry of node types: the one place packs add their nodes and the engine finds them.

use crate::{NodeDescriptor, NodeType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// All node types known to a process, by type name. The binary fills it by calling each pack's
/// `register` function; the engine only ever looks names up here.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<&'static str, Arc<dyn NodeType>>,
}

/// A registration that would make the registry ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two packs declare the same type name.
    #[error("node type \"{0}\" is registered twice")]
    Duplicate(&'static str),
    /// A descriptor declares two inputs, parameters or outputs of one name.
    #[error(
        "node type \"{type_name}\" declares \"{name}\" twice among its inputs and parameters, or among its outputs"
    )]
    DuplicateName {
        /// The node type.
        type_name: &'static str,
        /// The repeated name.
        name: &'static str,
    },
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node type.
    ///
    /// # Errors
    /// [`RegistryError`] when the type name is taken or the descriptor repeats a name.
    pub fn register(&mut self, node: impl NodeType + 'static) -> Result<(), RegistryError> {
        let descriptor = node.descriptor();
        check_unique_names(descriptor)?;
        let name = descriptor.type_name;
        if self.types.contains_key(name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.types.insert(name, Arc::new(node));
        Ok(())
    }

    /// The node type named `type_name`.
    pub fn get(&self, type_name: &str) -> Option<&Arc<dyn NodeType>> {
        self.types.get(type_name)
    }

    /// All type names, sorted.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }

    /// All descriptors, sorted by type name.
    pub fn descriptors(&self) -> impl Iterator<Item = &NodeDescriptor> + '_ {
        self.types.values().map(|node| node.descriptor())
    }
}

fn check_unique_names(descriptor: &NodeDescriptor) -> Result<(), RegistryError> {
    let arguments = descriptor
        .inputs
        .iter()
        .map(|i| i.name)
        .chain(descriptor.params.iter().map(|p| p.name));
    let outputs = descriptor.outputs.iter().map(|o| o.name);
    for names in [arguments.collect::<Vec<_>>(), outputs.collect()] {
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(RegistryError::DuplicateName {
                    type_name: descriptor.type_name,
                    name,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Args, NodeError, ParamKind, ParamSpec, RunContext, SocketType, Value};

    struct Fake(NodeDescriptor);

    impl NodeType for Fake {
        fn descriptor(&self) -> &NodeDescriptor {
            &self.0
        }
        fn run(&self, _: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
            Ok(vec![])
        }
    }

    #[test]
    fn refuses_duplicate_types_and_names() {
        let mut registry = Registry::new();
        registry.register(Fake(NodeDescriptor::new("A", "test", ""))).unwrap();
        assert_eq!(
            registry.register(Fake(NodeDescriptor::new("A", "test", ""))),
            Err(RegistryError::Duplicate("A"))
        );
        let twice = NodeDescriptor::new("B", "test", "")
            .input("x", SocketType::Int, "")
            .param(ParamSpec::new("x", ParamKind::Boolean { default: None }, ""));
        assert!(matches!(
            registry.register(Fake(twice)),
            Err(RegistryError::DuplicateName { .. })
        ));
        assert_eq!(registry.type_names().collect::<Vec<_>>(), ["A"]);
    }
}
