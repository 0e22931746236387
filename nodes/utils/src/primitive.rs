//! Primitive value nodes: a literal made into an output, so one value can feed many nodes.

use swapgraph_node_api::{
    Args, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, SocketType, Value,
};

/// The bounds of `PrimitiveFloat`: far beyond any parameter, short enough to read.
const FLOAT_LIMIT: f64 = 1e18;

/// `PrimitiveInt`, `PrimitiveFloat`, `PrimitiveString` and `PrimitiveBoolean`: one parameter
/// `value`, one output of the same type.
pub struct Primitive {
    descriptor: NodeDescriptor,
}

impl Primitive {
    /// The four primitive node types.
    pub fn all() -> [Primitive; 4] {
        [
            Self::new(
                "PrimitiveInt",
                ParamKind::Int {
                    default: None,
                    min: i64::MIN,
                    max: i64::MAX,
                },
                SocketType::Int,
            ),
            Self::new(
                "PrimitiveFloat",
                ParamKind::Float {
                    default: None,
                    min: -FLOAT_LIMIT,
                    max: FLOAT_LIMIT,
                },
                SocketType::Float,
            ),
            Self::new(
                "PrimitiveString",
                ParamKind::String {
                    default: None,
                    multiline: true,
                },
                SocketType::String,
            ),
            Self::new(
                "PrimitiveBoolean",
                ParamKind::Boolean { default: None },
                SocketType::Boolean,
            ),
        ]
    }

    fn new(type_name: &'static str, kind: ParamKind, socket: SocketType) -> Self {
        let descriptor = NodeDescriptor::new(
            type_name,
            "utils/primitive",
            "Holds one literal value so that several nodes can share it through links.",
        )
        .param(ParamSpec::new("value", kind, "The value to output."))
        .output(socket, "The value.");
        Self { descriptor }
    }
}

impl NodeType for Primitive {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        Ok(vec![args.value("value")?.clone()])
    }
}
