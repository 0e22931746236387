//! Primitive value nodes: a literal made into an output, so one value can feed many nodes.

use std::sync::Arc;
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The bounds of `PrimitiveFloat`: far beyond any parameter, short enough to read.
const FLOAT_LIMIT: f64 = 1e18;

/// A primitive node's one param, `value`, and the output value it makes.
trait PrimitiveValue: Params {
    /// The output's socket type.
    const SOCKET: SocketType;
    /// The param as the output value.
    fn into_value(self) -> Value;
}

/// `PrimitiveInt`'s param.
#[derive(Params)]
struct IntValue {
    /// The value to output.
    value: i64,
}

/// `PrimitiveFloat`'s param.
#[derive(Params)]
struct FloatValue {
    /// The value to output.
    #[param(min = -FLOAT_LIMIT, max = FLOAT_LIMIT)]
    value: f64,
}

/// `PrimitiveString`'s param.
#[derive(Params)]
struct StringValue {
    /// The value to output.
    #[param(multiline)]
    value: Arc<str>,
}

/// `PrimitiveBoolean`'s param.
#[derive(Params)]
struct BooleanValue {
    /// The value to output.
    value: bool,
}

/// Each param struct's socket type and value variant.
macro_rules! primitive_value {
    ($($params:ident => $variant:ident, $socket:ident);*) => {$(
        impl PrimitiveValue for $params {
            const SOCKET: SocketType = SocketType::$socket;
            fn into_value(self) -> Value {
                Value::$variant(self.value)
            }
        }
    )*};
}

primitive_value!(
    IntValue => Int, INT;
    FloatValue => Float, FLOAT;
    StringValue => String, STRING;
    BooleanValue => Boolean, BOOLEAN
);

/// `PrimitiveInt`, `PrimitiveFloat`, `PrimitiveString` and `PrimitiveBoolean`: one parameter
/// `value`, one output of the same type.
pub struct Primitive {
    descriptor: NodeDescriptor,
    read: fn(&Args) -> Result<Value, NodeError>,
}

impl Primitive {
    /// The four primitive node types.
    pub fn all() -> [Primitive; 4] {
        [
            Self::new::<IntValue>("PrimitiveInt"),
            Self::new::<FloatValue>("PrimitiveFloat"),
            Self::new::<StringValue>("PrimitiveString"),
            Self::new::<BooleanValue>("PrimitiveBoolean"),
        ]
    }

    fn new<P: PrimitiveValue>(type_name: &'static str) -> Self {
        let descriptor = NodeDescriptor::new(
            type_name,
            "utils/primitive",
            "Holds one literal value so that several nodes can share it through links.",
        )
        .params::<P>()
        .output(P::SOCKET, "The value.");
        Self {
            descriptor,
            read: |args| Ok(P::from_args(args)?.into_value()),
        }
    }
}

impl NodeType for Primitive {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        Ok(vec![(self.read)(args)?])
    }
}
