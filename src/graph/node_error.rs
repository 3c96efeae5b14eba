//! Errors that name a node: built here, beside the IR, so that the error
//! type itself knows nothing of graphs.

use super::Node;
use crate::error::Error;

impl Error {
    pub fn node(node: &Node, reason: impl Into<String>) -> Self {
        Error::Node {
            node: node.display_name(),
            op: node.op_type.clone(),
            reason: reason.into(),
        }
    }

    pub fn attr(node: &Node, attr: &str, reason: impl Into<String>) -> Self {
        Error::Attribute {
            node: node.display_name(),
            op: node.op_type.clone(),
            attr: attr.to_string(),
            reason: reason.into(),
        }
    }

    /// This error as raised while running `node` (said once, where the
    /// node is lowered; errors that already name a node stay as they are).
    pub fn at_node(self, node: &Node) -> Self {
        match self {
            e @ (Error::Node { .. } | Error::Attribute { .. } | Error::AtNode { .. }) => e,
            e => Error::AtNode {
                node: node.display_name(),
                op: node.op_type.clone(),
                source: Box::new(e),
            },
        }
    }
}
