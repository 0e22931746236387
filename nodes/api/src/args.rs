//! The arguments a node receives: its linked inputs and its parameters, by name.

use crate::{NodeError, ParamType, Value};
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

    /// The param named `name` as its declared type (see [`crate::Params`]); an optional
    /// param left out reads as `None`.
    ///
    /// # Errors
    /// [`NodeError::Argument`] when it is absent but required, or holds another type.
    pub fn param<T: ParamType>(&self, name: &str) -> Result<T, NodeError> {
        T::read(self.get(name)).map_err(|problem| argument(name, problem))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Handle, SocketType};

    #[test]
    fn typed_getters_name_the_argument_on_mismatch() {
        let args = Args::new(vec![
            ("steps", Value::Int(3)),
            ("text", Value::string("hi")),
            ("latent", Value::Handle(Handle::new(SocketType::LATENT, Arc::new(7u8)))),
        ]);
        assert_eq!(args.param::<i64>("steps").unwrap(), 3);
        assert_eq!(&*args.param::<Arc<str>>("text").unwrap(), "hi");
        assert_eq!(*args.handle::<u8>("latent").unwrap(), 7);
        assert_eq!(
            args.param::<bool>("steps").unwrap_err().to_string(),
            "argument \"steps\": expected BOOLEAN, found INT"
        );
        assert!(args.handle::<u16>("latent").is_err());
        assert_eq!(
            args.param::<i64>("seed").unwrap_err().to_string(),
            "argument \"seed\": missing"
        );
        assert_eq!(args.param::<Option<i64>>("seed").unwrap(), None);
    }
}
