//! The arguments a node receives: its linked inputs and its parameters, by name.

use crate::{NodeError, SocketType, Value};
use std::any::Any;
use std::sync::Arc;

/// A node's inputs and parameters, already validated and checked against the descriptor, looked
/// up by the names the descriptor declares.
#[derive(Clone, Debug, Default)]
pub struct Args {
    values: Vec<(&'static str, Value)>,
}

impl Args {
    /// Arguments from name-value pairs.
    pub fn new(values: Vec<(&'static str, Value)>) -> Self {
        Self { values }
    }

    /// The value named `name`, if given (optional inputs may be absent).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(key, _)| *key == name).map(|(_, value)| value)
    }

    /// The value named `name`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent.
    pub fn value(&self, name: &str) -> Result<&Value, NodeError> {
        self.get(name).ok_or_else(|| argument(name, "missing".to_string()))
    }

    /// The `INT` argument named `name`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent or of another type.
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.value(name)? {
            Value::Int(v) => Ok(*v),
            other => Err(mismatch(name, SocketType::Int, other)),
        }
    }

    /// The `FLOAT` argument named `name`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent or of another type.
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.value(name)? {
            Value::Float(v) => Ok(*v),
            other => Err(mismatch(name, SocketType::Float, other)),
        }
    }

    /// The `STRING` argument named `name`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent or of another type.
    pub fn string(&self, name: &str) -> Result<Arc<str>, NodeError> {
        match self.value(name)? {
            Value::String(v) => Ok(Arc::clone(v)),
            other => Err(mismatch(name, SocketType::String, other)),
        }
    }

    /// The `BOOLEAN` argument named `name`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent or of another type.
    pub fn boolean(&self, name: &str) -> Result<bool, NodeError> {
        match self.value(name)? {
            Value::Boolean(v) => Ok(*v),
            other => Err(mismatch(name, SocketType::Boolean, other)),
        }
    }

    /// The handle argument named `name`, as the pack's own type `T`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent, primitive, or holds another Rust type.
    pub fn handle<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>, NodeError> {
        match self.value(name)? {
            Value::Handle(handle) => handle.downcast::<T>().ok_or_else(|| {
                argument(
                    name,
                    format!("the {} value holds another kind of object", handle.socket_type()),
                )
            }),
            other => Err(argument(
                name,
                format!("expected an object, found {}", other.socket_type()),
            )),
        }
    }

    /// The optional handle input named `name`: `None` when it is not connected.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is connected to a value of another type.
    pub fn optional_handle<T: Any + Send + Sync>(&self, name: &str) -> Result<Option<Arc<T>>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.handle(name).map(Some),
        }
    }
}

fn argument(name: &str, problem: String) -> NodeError {
    NodeError::Argument {
        name: name.to_string(),
        problem,
    }
}

fn mismatch(name: &str, expected: SocketType, found: &Value) -> NodeError {
    argument(name, format!("expected {expected}, found {}", found.socket_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Handle;

    #[test]
    fn typed_getters_name_the_argument_on_mismatch() {
        let args = Args::new(vec![
            ("steps", Value::Int(3)),
            ("text", Value::string("hi")),
            ("latent", Value::Handle(Handle::new(SocketType::Latent, Arc::new(7u8)))),
        ]);
        assert_eq!(args.int("steps").unwrap(), 3);
        assert_eq!(&*args.string("text").unwrap(), "hi");
        assert_eq!(*args.handle::<u8>("latent").unwrap(), 7);
        assert_eq!(
            args.float("steps").unwrap_err().to_string(),
            "argument \"steps\": expected FLOAT, found INT"
        );
        assert!(args.handle::<u16>("latent").is_err());
        assert_eq!(args.int("seed").unwrap_err().to_string(), "argument \"seed\": missing");
    }
}
