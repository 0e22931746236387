//! The registry of node types: the one place packs add their nodes and the engine finds them.

use crate::socket::CORE;
use crate::{NodeDescriptor, NodeType, SocketSpec, SocketType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// All node types and socket types known to a process, by name. The binary fills it by calling
/// each pack's `register` function; the engine only ever looks names up here.
#[derive(Clone)]
pub struct Registry {
    types: BTreeMap<&'static str, Arc<dyn NodeType>>,
    sockets: BTreeMap<&'static str, SocketSpec>,
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
    /// Two packs declare a socket type of one name.
    #[error("socket type \"{0}\" is registered twice")]
    DuplicateSocket(&'static str),
    /// A node uses a socket type no pack has registered (yet: a pack registers its socket types
    /// before its nodes, and after the packs whose types it uses).
    #[error("node type \"{type_name}\" uses socket type \"{socket}\", which is not registered")]
    UnknownSocket {
        /// The node type.
        type_name: &'static str,
        /// The socket type's name.
        socket: &'static str,
    },
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the core socket types and no node types.
    pub fn new() -> Self {
        Self {
            types: BTreeMap::new(),
            sockets: CORE.into_iter().map(|spec| (spec.socket.name(), spec)).collect(),
        }
    }

    /// Adds a socket type a pack defines.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateSocket`] when its name is taken.
    pub fn register_socket(&mut self, spec: SocketSpec) -> Result<(), RegistryError> {
        let name = spec.socket.name();
        if self.sockets.contains_key(name) {
            return Err(RegistryError::DuplicateSocket(name));
        }
        self.sockets.insert(name, spec);
        Ok(())
    }

    /// Adds a node type.
    ///
    /// # Errors
    /// [`RegistryError`] when the type name is taken, the descriptor repeats a name, or it uses
    /// a socket type that is not registered.
    pub fn register(&mut self, node: impl NodeType + 'static) -> Result<(), RegistryError> {
        let descriptor = node.descriptor();
        check_unique_names(descriptor)?;
        let sockets = descriptor
            .inputs
            .iter()
            .map(|i| i.socket)
            .chain(descriptor.outputs.iter().map(|o| o.socket));
        for socket in sockets {
            if !self.sockets.contains_key(socket.name()) {
                return Err(RegistryError::UnknownSocket {
                    type_name: descriptor.type_name,
                    socket: socket.name(),
                });
            }
        }
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

    /// All socket types, sorted by name.
    pub fn sockets(&self) -> impl Iterator<Item = &SocketSpec> + '_ {
        self.sockets.values()
    }

    /// Whether an input of type `input` takes an output of type `output`: the same type, or one
    /// the input's type accepts.
    pub fn accepts(&self, input: SocketType, output: SocketType) -> bool {
        input == output
            || self
                .sockets
                .get(input.name())
                .is_some_and(|spec| spec.accepts.contains(&output))
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
            .input("x", SocketType::INT, "")
            .param(ParamSpec::new("x", ParamKind::Boolean { default: None }, ""));
        assert!(matches!(
            registry.register(Fake(twice)),
            Err(RegistryError::DuplicateName { .. })
        ));
        assert_eq!(registry.type_names().collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn a_pack_socket_type_is_registered_before_its_nodes_and_may_accept_others() {
        const FACE: SocketType = SocketType::new("FACE", "face");
        const FACES: SocketType = SocketType::new("FACES", "faces");
        let mut registry = Registry::new();
        let uses_face = || Fake(NodeDescriptor::new("Detect", "test", "").output(FACE, ""));
        assert_eq!(
            registry.register(uses_face()),
            Err(RegistryError::UnknownSocket {
                type_name: "Detect",
                socket: "FACE"
            })
        );
        registry
            .register_socket(SocketSpec::new(FACE, "#123456", "A face."))
            .unwrap();
        registry
            .register_socket(SocketSpec::new(FACES, "#654321", "Faces.").accepting(&[FACE]))
            .unwrap();
        assert_eq!(
            registry.register_socket(SocketSpec::new(FACE, "#000000", "")),
            Err(RegistryError::DuplicateSocket("FACE"))
        );
        registry.register(uses_face()).unwrap();
        assert!(registry.accepts(FACES, FACE) && registry.accepts(FACE, FACE));
        assert!(!registry.accepts(FACE, FACES) && !registry.accepts(SocketType::IMAGE, FACE));
        assert!(registry.sockets().any(|spec| spec.socket == SocketType::MODEL));
    }
}
