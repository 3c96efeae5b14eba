//! The IR boundary: `ModelProto` ⇄ `Graph`. Whatever the IR does not model
//! travels in `Preserved` bytes, so a load/save round trip keeps everything
//! a user's file holds.

use crate::error::{Error, Result};
use crate::graph::tensor::{checked_numel, dtype};
use crate::graph::{Attr, Dim, Graph, Node, Opset, Preserved, Tensor, ValueInfo};
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use crate::onnx::{self, WriteOptions};
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use std::path::Path;

/// Reads an ONNX file (external data included) into the IR.
pub fn load(path: &Path) -> Result<Graph> {
    Ok(load_with_facts(path)?.0)
}

/// `load`, and what the file was (external data, digest) from the same read.
pub fn load_with_facts(path: &Path) -> Result<(Graph, onnx::io::FileFacts)> {
    let (model, facts) = onnx::io::read_model_with_facts(path)?;
    // every error names the file: graph-level ones as a decode failure,
    // node/tensor ones wrapped with the path in front
    let g = from_proto(model).map_err(|e| match e {
        Error::Graph(reason) => Error::Decode {
            path: path.to_path_buf(),
            reason,
        },
        e => Error::InModel {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
    })?;
    Ok((g, facts))
}

/// Writes the IR to an ONNX file atomically.
pub fn save(graph: &Graph, path: &Path, opts: &WriteOptions) -> Result<()> {
    onnx::write_model(&to_proto(graph), path, opts)
}

fn decode<M: Message + Default>(p: &Preserved) -> M {
    // The bytes were produced by `encode_to_vec` in this module.
    M::decode(p.0.as_slice()).unwrap_or_default()
}

pub fn from_proto(mut model: ModelProto) -> Result<Graph> {
    let mut gp = model
        .graph
        .take()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let mut initializers = indexmap::IndexMap::new();
    for t in std::mem::take(&mut gp.initializer) {
        let name = t.name().to_string();
        let tensor = tensor_from_proto(&t)?;
        if initializers.insert(name.clone(), tensor).is_some() {
            return Err(Error::tensor(&name, "two initializers have this name"));
        }
    }
    let nodes = std::mem::take(&mut gp.node)
        .into_iter()
        .map(node_from_proto)
        .collect::<Result<Vec<_>>>()?;
    let inputs = std::mem::take(&mut gp.input)
        .into_iter()
        .map(value_from_proto)
        .collect();
    let outputs = std::mem::take(&mut gp.output)
        .into_iter()
        .map(value_from_proto)
        .collect();
    let value_info = std::mem::take(&mut gp.value_info)
        .into_iter()
        .map(value_from_proto)
        .collect();
    let name = gp.name.take().unwrap_or_default();
    let opsets = std::mem::take(&mut model.opset_import)
        .into_iter()
        .map(|o| Opset {
            domain: o.domain.unwrap_or_default(),
            version: o.version.unwrap_or(1),
        })
        .collect();
    let metadata = std::mem::take(&mut model.metadata_props)
        .into_iter()
        .map(|e| (e.key.unwrap_or_default(), e.value.unwrap_or_default()))
        .collect();
    let ir_version = model.ir_version.take().unwrap_or(0);
    let producer_name = model.producer_name.take().unwrap_or_default();
    let producer_version = model.producer_version.take().unwrap_or_default();
    model.graph = Some(gp);
    let mut g = Graph {
        name,
        nodes,
        inputs,
        outputs,
        value_info,
        initializers,
        opsets,
        ir_version,
        producer_name,
        producer_version,
        metadata,
        shell: Preserved(model.encode_to_vec()),
    };
    g.sort()?;
    Ok(g)
}

pub fn to_proto(g: &Graph) -> ModelProto {
    let mut model: ModelProto = decode(&g.shell);
    let mut gp = model.graph.take().unwrap_or_default();
    gp.name = Some(g.name.clone());
    gp.node = g.nodes.iter().map(node_to_proto).collect();
    gp.initializer = g
        .initializers
        .iter()
        .map(|(k, t)| tensor_to_proto(k, t))
        .collect();
    gp.input = g.inputs.iter().map(value_to_proto).collect();
    gp.output = g.outputs.iter().map(value_to_proto).collect();
    gp.value_info = g.value_info.iter().map(value_to_proto).collect();
    model.graph = Some(gp);
    model.ir_version = Some(g.ir_version);
    model.producer_name = Some(g.producer_name.clone());
    model.producer_version = Some(g.producer_version.clone());
    model.opset_import = g
        .opsets
        .iter()
        .map(|o| OperatorSetIdProto {
            domain: Some(o.domain.clone()),
            version: Some(o.version),
        })
        .collect();
    model.metadata_props = g
        .metadata
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect();
    model
}

// ---------------------------------------------------------------- tensors

pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let name = t.name();
    if t.segment.is_some() {
        return Err(Error::tensor(name, "segmented tensors are not supported"));
    }
    let dt = t.data_type.unwrap_or(0);
    let numel = checked_numel(name, &t.dims, dt)?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let mismatch = |field: &str, have: usize| {
        Error::tensor(
            name,
            format!(
                "{field} holds {have} values but dims {:?} need {numel}",
                t.dims
            ),
        )
    };
    if dt == dtype::STRING {
        if t.string_data.len() != numel {
            return Err(mismatch("string_data", t.string_data.len()));
        }
        return Ok(Tensor::Strings {
            shape,
            data: t.string_data.clone(),
        });
    }
    let bits =
        dtype::bits(dt).ok_or_else(|| Error::tensor(name, format!("unknown data_type {dt}")))?;
    let nbytes = (numel as u64 * bits).div_ceil(8) as usize;
    let bytes: Vec<u8> = if let Some(raw) = &t.raw_data {
        if raw.len() != nbytes {
            return Err(Error::tensor(
                name,
                format!(
                    "raw_data has {} bytes but dims {:?} need {nbytes}",
                    raw.len(),
                    t.dims
                ),
            ));
        }
        raw.clone()
    } else {
        let check = |len: usize, field: &str| {
            if len == numel {
                Ok(())
            } else {
                Err(mismatch(field, len))
            }
        };
        match dt {
            dtype::FLOAT => {
                check(t.float_data.len(), "float_data")?;
                t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            dtype::INT64 => {
                check(t.int64_data.len(), "int64_data")?;
                t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            dtype::DOUBLE => {
                check(t.double_data.len(), "double_data")?;
                t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            dtype::UINT32 | dtype::UINT64 => {
                check(t.uint64_data.len(), "uint64_data")?;
                let w = (bits / 8) as usize;
                t.uint64_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes()[..w].to_vec())
                    .collect()
            }
            _ if (8..=32).contains(&bits) => {
                // int32_data carries every narrower integer and 16-bit float
                // type, one element per int32 holding its bit pattern.
                check(t.int32_data.len(), "int32_data")?;
                let w = (bits / 8) as usize;
                t.int32_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes()[..w].to_vec())
                    .collect()
            }
            _ => {
                return Err(Error::tensor(
                    name,
                    format!("data_type {dt} without raw_data is not supported"),
                ))
            }
        }
    };
    Ok(match dt {
        dtype::FLOAT => {
            let v = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::F32(array(name, &shape, v)?)
        }
        dtype::INT64 => {
            let v = bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect();
            Tensor::I64(array(name, &shape, v)?)
        }
        _ => Tensor::Raw {
            dtype: dt,
            shape,
            bytes,
        },
    })
}

fn array<T>(name: &str, shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| Error::tensor(name, e.to_string()))
}

pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let dims = t.shape().iter().map(|&d| d as i64).collect();
    let mut p = TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(t.dtype()),
        ..Default::default()
    };
    match t {
        Tensor::F32(a) => p.raw_data = Some(a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Tensor::I64(a) => p.raw_data = Some(a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Tensor::Raw { bytes, .. } => p.raw_data = Some(bytes.clone()),
        Tensor::Strings { data, .. } => p.string_data = data.clone(),
    }
    p
}

// ---------------------------------------------------------------- nodes

fn node_from_proto(mut n: NodeProto) -> Result<Node> {
    let name = n.name.take().unwrap_or_default();
    let op_type = n.op_type.take().unwrap_or_default();
    let domain = n.domain.take().unwrap_or_default();
    let inputs = std::mem::take(&mut n.input);
    let outputs = std::mem::take(&mut n.output);
    let mut node = Node {
        name,
        op_type,
        domain,
        inputs,
        outputs,
        attrs: Vec::new(),
        preserved: Preserved::default(),
    };
    if node.op_type.is_empty() {
        return Err(Error::node(&node, "the node has no op_type"));
    }
    for a in std::mem::take(&mut n.attribute) {
        let attr_name = a.name().to_string();
        let value = attr_from_proto(&a).map_err(|reason| Error::attr(&node, &attr_name, reason))?;
        node.attrs.push((attr_name, value));
    }
    node.preserved = Preserved(n.encode_to_vec());
    Ok(node)
}

fn node_to_proto(n: &Node) -> NodeProto {
    let mut p: NodeProto = decode(&n.preserved);
    p.name = Some(n.name.clone());
    p.op_type = Some(n.op_type.clone());
    p.domain = (!n.domain.is_empty()).then(|| n.domain.clone());
    p.input = n.inputs.clone();
    p.output = n.outputs.clone();
    p.attribute = n.attrs.iter().map(|(k, v)| attr_to_proto(k, v)).collect();
    p
}

fn attr_from_proto(a: &AttributeProto) -> std::result::Result<Attr, String> {
    use AttributeType as T;
    if a.ref_attr_name.is_some() {
        return Ok(Attr::Opaque(Preserved(a.encode_to_vec())));
    }
    let ty = match a.r#type() {
        // Files from before IR 0.0.2 may omit `type`: infer it from the field set.
        T::Undefined => {
            if a.f.is_some() {
                T::Float
            } else if a.i.is_some() {
                T::Int
            } else if a.s.is_some() {
                T::String
            } else if a.t.is_some() {
                T::Tensor
            } else if !a.floats.is_empty() {
                T::Floats
            } else if !a.ints.is_empty() {
                T::Ints
            } else if !a.strings.is_empty() {
                T::Strings
            } else {
                T::Undefined
            }
        }
        t => t,
    };
    Ok(match ty {
        T::Float => Attr::Float(a.f()),
        T::Int => Attr::Int(a.i()),
        T::String => Attr::String(a.s().to_vec()),
        T::Tensor => {
            let t = a.t.as_ref().ok_or("tensor attribute without a tensor")?;
            Attr::Tensor(tensor_from_proto(t).map_err(|e| e.to_string())?)
        }
        T::Floats => Attr::Floats(a.floats.clone()),
        T::Ints => Attr::Ints(a.ints.clone()),
        T::Strings => Attr::Strings(a.strings.clone()),
        _ => Attr::Opaque(Preserved(a.encode_to_vec())),
    })
}

fn attr_to_proto(name: &str, v: &Attr) -> AttributeProto {
    use AttributeType as T;
    let mut p = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match v {
        Attr::Float(f) => {
            p.f = Some(*f);
            p.set_type(T::Float);
        }
        Attr::Int(i) => {
            p.i = Some(*i);
            p.set_type(T::Int);
        }
        Attr::String(s) => {
            p.s = Some(s.clone());
            p.set_type(T::String);
        }
        Attr::Tensor(t) => {
            p.t = Some(tensor_to_proto("", t));
            p.set_type(T::Tensor);
        }
        Attr::Floats(f) => {
            p.floats = f.clone();
            p.set_type(T::Floats);
        }
        Attr::Ints(i) => {
            p.ints = i.clone();
            p.set_type(T::Ints);
        }
        Attr::Strings(s) => {
            p.strings = s.clone();
            p.set_type(T::Strings);
        }
        Attr::Opaque(bytes) => {
            p = decode(bytes);
            p.name = Some(name.to_string());
        }
    }
    p
}

// ---------------------------------------------------------------- values

fn value_from_proto(mut v: ValueInfoProto) -> ValueInfo {
    let name = v.name.take().unwrap_or_default();
    let mut elem_type = 0;
    let mut shape = None;
    if let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(tt)),
        ..
    }) = v.r#type.as_mut()
    {
        elem_type = tt.elem_type.take().unwrap_or(0);
        shape = tt.shape.take().map(|s| {
            s.dim
                .into_iter()
                .map(|d| match d.value {
                    Some(tensor_shape_proto::dimension::Value::DimValue(x)) => Dim::Fixed(x),
                    Some(tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::Param(p),
                    None => Dim::Unknown,
                })
                .collect()
        });
    }
    ValueInfo {
        name,
        elem_type,
        shape,
        preserved: Preserved(v.encode_to_vec()),
    }
}

fn value_to_proto(v: &ValueInfo) -> ValueInfoProto {
    let mut p: ValueInfoProto = decode(&v.preserved);
    p.name = Some(v.name.clone());
    if v.elem_type != 0 || v.shape.is_some() {
        let ty = p.r#type.get_or_insert_with(TypeProto::default);
        let mut tt = match ty.value.take() {
            Some(type_proto::Value::TensorType(tt)) => tt,
            _ => type_proto::Tensor::default(),
        };
        tt.elem_type = Some(v.elem_type);
        tt.shape = v.shape.as_ref().map(|dims| TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| tensor_shape_proto::Dimension {
                    value: match d {
                        Dim::Fixed(x) => Some(tensor_shape_proto::dimension::Value::DimValue(*x)),
                        Dim::Param(s) => {
                            Some(tensor_shape_proto::dimension::Value::DimParam(s.clone()))
                        }
                        Dim::Unknown => None,
                    },
                    denotation: None,
                })
                .collect(),
        });
        ty.value = Some(type_proto::Value::TensorType(tt));
    }
    p
}
