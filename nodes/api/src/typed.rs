//! Typed parameter declarations: a node declares its params once, as a struct deriving
//! [`Params`] (from `swapgraph-node-derive`), and reads them back as that struct. Each field's
//! Rust type gives its kind through [`ParamType`]: whole numbers, reals, booleans, text, a
//! [`Choice`] enum, or `Option` of one of them for a param that is off when left out.
//!
//! ```
//! use swapgraph_node_api::{Args, Choice, Params, Value};
//!
//! #[derive(Clone, Copy, Debug, PartialEq, Choice)]
//! enum Scheduler {
//!     Normal,
//!     Karras,
//! }
//!
//! #[derive(Params)]
//! struct Sampling {
//!     /// Denoising steps.
//!     #[param(default = 20, min = 1, max = 10_000)]
//!     steps: u32,
//!     /// How the noise levels are spaced.
//!     #[param(default = Scheduler::Normal)]
//!     scheduler: Scheduler,
//!     /// A budget in MiB; left out, none.
//!     #[param(min = 1)]
//!     budget_mb: Option<u64>,
//! }
//!
//! let specs = Sampling::specs();
//! assert_eq!(specs[1].name, "scheduler");
//! assert!(specs[2].optional);
//! let args = Args::new(vec![("steps", Value::Int(8)), ("scheduler", Value::string("karras"))]);
//! let read = Sampling::from_args(&args).unwrap();
//! assert_eq!((read.steps, read.scheduler, read.budget_mb), (8, Scheduler::Karras, None));
//! ```

use crate::{Args, NodeError, ParamKind, ParamSpec, Value};
use std::sync::Arc;

pub use swapgraph_node_derive::{Choice, Params};

/// A node's params as one struct: their declarations, and the struct read from a node's
/// arguments. Derive it; see the module's example.
pub trait Params: Sized {
    /// The declarations, in the order the fields are written.
    fn specs() -> Vec<ParamSpec>;

    /// The params read from `args` (validated against [`Params::specs`] already).
    ///
    /// # Errors
    /// [`NodeError::Argument`] naming a param whose value is missing or of another type.
    fn from_args(args: &Args) -> Result<Self, NodeError>;
}

/// A fieldless enum whose variants are a param's choices. Derive it: each variant's name is its
/// snake_case spelling unless `#[choice(name = "...")]` says otherwise.
pub trait Choice: Sized + Copy + 'static {
    /// Every variant's name, in declaration order.
    const NAMES: &'static [&'static str];

    /// The variant called `name`.
    fn from_name(name: &str) -> Option<Self>;

    /// This variant's name.
    fn name(self) -> &'static str;
}

/// What a field's `#[param(...)]` declares, in the terms of its type's literals.
pub struct Declared<L> {
    /// The value used when a workflow leaves the param out.
    pub default: Option<L>,
    /// The smallest accepted value (numbers only).
    pub min: Option<L>,
    /// The largest accepted value (numbers only).
    pub max: Option<L>,
    /// Whether text is edited in a text area (text only).
    pub multiline: bool,
}

/// A Rust type a param can have: its kind in the descriptor and how a value is read back.
pub trait ParamType: Sized {
    /// How defaults and bounds are written for this type.
    type Literal;

    /// The param's kind, with the declared default and bounds.
    fn kind(declared: Declared<Self::Literal>) -> ParamKind;

    /// The value of the argument, `None` when the workflow left it out.
    ///
    /// # Errors
    /// What is wrong with the value, for a message that names the param.
    fn read(value: Option<&Value>) -> Result<Self, String>;

    /// Adds what the type says beyond its kind (an `Option` is optional).
    fn declare(spec: ParamSpec) -> ParamSpec {
        spec
    }
}

fn given(value: Option<&Value>) -> Result<&Value, String> {
    value.ok_or_else(|| "missing".to_string())
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", found.socket_type())
}

/// Whole-number types: declared with their own bounds (at most `i64::MAX`), read back
/// checked.
macro_rules! whole_number {
    ($($ty:ty),*) => {$(
        impl ParamType for $ty {
            type Literal = $ty;

            fn kind(declared: Declared<$ty>) -> ParamKind {
                let wide = |v: $ty| i64::try_from(v).unwrap_or(i64::MAX);
                ParamKind::Int {
                    default: declared.default.map(wide),
                    min: wide(declared.min.unwrap_or(<$ty>::MIN)),
                    max: wide(declared.max.unwrap_or(<$ty>::MAX)),
                }
            }

            fn read(value: Option<&Value>) -> Result<Self, String> {
                match given(value)? {
                    Value::Int(v) => <$ty>::try_from(*v).map_err(|_| format!("{v} does not fit {}", stringify!($ty))),
                    other => Err(expected("INT", other)),
                }
            }
        }
    )*};
}

whole_number!(i64, u64, u32, usize);

impl ParamType for f64 {
    type Literal = f64;

    fn kind(declared: Declared<f64>) -> ParamKind {
        ParamKind::Float {
            default: declared.default,
            min: declared.min.unwrap_or(f64::MIN),
            max: declared.max.unwrap_or(f64::MAX),
        }
    }

    fn read(value: Option<&Value>) -> Result<Self, String> {
        match given(value)? {
            Value::Float(v) => Ok(*v),
            Value::Int(v) => Ok(*v as f64),
            other => Err(expected("FLOAT", other)),
        }
    }
}

impl ParamType for bool {
    type Literal = bool;

    fn kind(declared: Declared<bool>) -> ParamKind {
        ParamKind::Boolean {
            default: declared.default,
        }
    }

    fn read(value: Option<&Value>) -> Result<Self, String> {
        match given(value)? {
            Value::Boolean(v) => Ok(*v),
            other => Err(expected("BOOLEAN", other)),
        }
    }
}

impl ParamType for Arc<str> {
    type Literal = &'static str;

    fn kind(declared: Declared<&'static str>) -> ParamKind {
        ParamKind::String {
            default: declared.default,
            multiline: declared.multiline,
        }
    }

    fn read(value: Option<&Value>) -> Result<Self, String> {
        match given(value)? {
            Value::String(v) => Ok(Arc::clone(v)),
            other => Err(expected("STRING", other)),
        }
    }
}

impl<C: Choice> ParamType for C {
    type Literal = C;

    fn kind(declared: Declared<C>) -> ParamKind {
        ParamKind::Choice {
            default: declared.default.map(C::name),
            choices: C::NAMES.to_vec(),
        }
    }

    fn read(value: Option<&Value>) -> Result<Self, String> {
        match given(value)? {
            Value::String(name) => C::from_name(name).ok_or_else(|| {
                let names: Vec<String> = C::NAMES.iter().map(|n| format!("\"{n}\"")).collect();
                format!("\"{name}\" is not one of {}", names.join(", "))
            }),
            other => Err(expected("STRING", other)),
        }
    }
}

impl<T: ParamType> ParamType for Option<T> {
    type Literal = T::Literal;

    /// An optional param has no default: left out, it is off.
    fn kind(declared: Declared<T::Literal>) -> ParamKind {
        T::kind(Declared {
            default: None,
            ..declared
        })
    }

    fn read(value: Option<&Value>) -> Result<Self, String> {
        value.map(|v| T::read(Some(v))).transpose()
    }

    fn declare(spec: ParamSpec) -> ParamSpec {
        T::declare(spec).optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_bounded_by_their_type_and_read_back_checked() {
        fn none<L>() -> Declared<L> {
            Declared {
                default: None,
                min: None,
                max: None,
                multiline: false,
            }
        }
        assert!(matches!(u32::kind(none()), ParamKind::Int { min: 0, max, .. } if max == i64::from(u32::MAX)));
        assert!(matches!(u64::kind(none()), ParamKind::Int { max: i64::MAX, .. }));
        assert_eq!(u32::read(Some(&Value::Int(7))), Ok(7));
        assert_eq!(u32::read(Some(&Value::Int(-1))), Err("-1 does not fit u32".to_string()));
        assert_eq!(u32::read(None), Err("missing".to_string()));
        assert_eq!(Option::<u32>::read(None), Ok(None));
        assert_eq!(
            bool::read(Some(&Value::Int(1))),
            Err("expected BOOLEAN, found INT".to_string())
        );
    }
}
