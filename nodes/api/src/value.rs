//! The values that travel between nodes at run time.

use crate::SocketType;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A value produced by a node's output or given to a node's input or parameter.
///
/// Primitive values are held inline; everything heavy (models, tensors, images) travels as a
/// [`Handle`], so passing a loaded checkpoint to three nodes shares it instead of copying it.
#[derive(Clone)]
pub enum Value {
    /// An `INT`.
    Int(i64),
    /// A `FLOAT`.
    Float(f64),
    /// A `STRING`.
    String(Arc<str>),
    /// A `BOOLEAN`.
    Boolean(bool),
    /// Any other socket type: a shared, type-erased object that the consuming pack downcasts.
    Handle(Handle),
}

impl Value {
    /// The socket type this value belongs to.
    pub fn socket_type(&self) -> SocketType {
        match self {
            Self::Int(_) => SocketType::INT,
            Self::Float(_) => SocketType::FLOAT,
            Self::String(_) => SocketType::STRING,
            Self::Boolean(_) => SocketType::BOOLEAN,
            Self::Handle(handle) => handle.socket_type(),
        }
    }

    /// A text value.
    pub fn string(text: impl Into<Arc<str>>) -> Self {
        Self::String(text.into())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "Int({v})"),
            Self::Float(v) => write!(f, "Float({v})"),
            Self::String(v) => write!(f, "String({v:?})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::Handle(h) => write!(f, "Handle({})", h.socket_type()),
        }
    }
}

/// A shared object of a non-primitive socket type (a model, a latent batch, an image batch...).
///
/// The node API knows nothing of tensors or models: the producing pack wraps its own type, the
/// consuming pack asks for it back with [`Handle::downcast`]. Cloning shares the object.
#[derive(Clone)]
pub struct Handle {
    socket: SocketType,
    object: Arc<dyn Any + Send + Sync>,
}

impl Handle {
    /// Wraps `object` as a value of socket type `socket`.
    pub fn new<T: Any + Send + Sync>(socket: SocketType, object: Arc<T>) -> Self {
        Self { socket, object }
    }

    /// The socket type the producer declared.
    pub fn socket_type(&self) -> SocketType {
        self.socket
    }

    /// The shared object as `T`, or `None` if it holds another Rust type.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.object).downcast::<T>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_and_downcast_to_their_own_type_only() {
        let handle = Handle::new(SocketType::LATENT, Arc::new(vec![1.0f32, 2.0]));
        let value = Value::Handle(handle.clone());
        assert_eq!(value.socket_type(), SocketType::LATENT);
        assert_eq!(*handle.downcast::<Vec<f32>>().unwrap(), vec![1.0, 2.0]);
        assert!(handle.downcast::<String>().is_none());
    }
}
