//! Node attributes with typed getters that name the node and attribute when a
//! value is missing or of the wrong type.

use super::{Node, Preserved, Tensor};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    /// Graphs, sparse tensors, type protos, tensor lists, references: kept as
    /// the encoded `AttributeProto` and given back unchanged.
    Opaque(Preserved),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Opaque(_) => "graph/other",
        }
    }
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    fn wrong(&self, name: &str, want: &str, got: &Attr) -> Error {
        Error::attr(self, name, format!("expected {want}, found {}", got.kind()))
    }

    pub fn attr_int(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.wrong(name, "int", a)),
        }
    }

    pub fn attr_int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn attr_float_or(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(a) => Err(self.wrong(name, "float", a)),
        }
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<&[i64]>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(a) => Err(self.wrong(name, "ints", a)),
        }
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attr::String(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            Some(a) => Err(self.wrong(name, "string", a)),
        }
    }
}
