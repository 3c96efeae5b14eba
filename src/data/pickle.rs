//! Just enough of Python's pickle format to read the data sets torchvision
//! downloads as pickles (`cifar-10-batches-py`, `cifar-100-python`): dicts,
//! lists, tuples, numbers, strings and bytes, and numpy arrays (as numpy
//! pickles them: `_reconstruct` then a state with shape, dtype and raw
//! bytes). Anything else, an unknown class above all, is an error: a pickle
//! is never executed.

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A numpy array: shape, dtype string (`u1`, `<i8`, ...), raw bytes.
    Array {
        shape: Vec<usize>,
        dtype: String,
        data: Vec<u8>,
    },
    /// A numpy dtype (`u1`, `i8`, ...).
    Dtype(String),
    /// A class or function reference, only as the callable of a REDUCE.
    Global(String, String),
}

impl Value {
    /// The entry of a dict under a string key, stored as str (Python 3) or
    /// bytes (Python 2 pickles).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                Value::Bytes(b) if b == key.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    pub fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .map(|x| match x {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            Value::Array { dtype, data, .. } => {
                let width = match dtype.trim_start_matches(['<', '|', '=']) {
                    "u1" | "i1" => 1,
                    "i8" => 8,
                    "i4" => 4,
                    _ => return None,
                };
                Some(
                    data.chunks_exact(width)
                        .map(|c| match width {
                            1 if dtype.contains('u') => c[0] as i64,
                            1 => c[0] as i8 as i64,
                            4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                            _ => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

enum Item {
    Mark,
    V(Value),
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .i
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated pickle")?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn u64(&mut self) -> Result<usize, String> {
        let s = self.take(8)?;
        usize::try_from(u64::from_le_bytes(s.try_into().map_err(|_| "truncated")?))
            .map_err(|_| "length too large".to_string())
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.b[self.i..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("truncated pickle")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.i += n + 1;
        Ok(s)
    }
}

fn pop(st: &mut Vec<Item>) -> Result<Value, String> {
    match st.pop() {
        Some(Item::V(v)) => Ok(v),
        _ => Err("stack underflow".into()),
    }
}

fn pop_mark(st: &mut Vec<Item>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    loop {
        match st.pop() {
            Some(Item::V(v)) => out.push(v),
            Some(Item::Mark) => break,
            None => return Err("no mark on the stack".into()),
        }
    }
    out.reverse();
    Ok(out)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Applies a REDUCE: only the callables numpy and Python 3's bytes need.
fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &f else {
        return Err("REDUCE of something that is not a class".into());
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match (module.as_str(), name.as_str()) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Ok(Value::Array {
            shape: vec![0],
            dtype: String::new(),
            data: Vec::new(),
        }),
        ("numpy", "dtype") => Ok(Value::Dtype(
            args.first().and_then(text).ok_or("dtype without a name")?,
        )),
        // Python 3 pickles bytes at protocol 2 as encode(str, 'latin1')
        ("_codecs", "encode") => {
            let s = args.first().and_then(text).ok_or("encode without text")?;
            Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()))
        }
        (m, n) => Err(format!(
            "the pickle builds a `{m}.{n}`, which is not supported"
        )),
    }
}

/// BUILD: a numpy array gets its shape, dtype and bytes from its state.
fn build(obj: Value, state: Value) -> Result<Value, String> {
    match (obj, state) {
        (Value::Array { .. }, Value::Tuple(s)) if s.len() == 5 => {
            let shape = s[1]
                .as_ints()
                .ok_or("array shape is not integers")?
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| "negative dimension".to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let dtype = match &s[2] {
                Value::Dtype(d) => d.clone(),
                _ => return Err("array dtype missing".into()),
            };
            if s[3] == Value::Bool(true) {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            let data = match &s[4] {
                Value::Bytes(b) => b.clone(),
                Value::Str(t) => t.chars().map(|c| c as u32 as u8).collect(),
                _ => return Err("array data is not bytes".into()),
            };
            Ok(Value::Array { shape, dtype, data })
        }
        (d @ Value::Dtype(_), _) => Ok(d),
        (o, _) => Err(format!("BUILD of {o:?} is not supported")),
    }
}

/// Decodes one pickle.
pub fn load(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b: bytes, i: 0 };
    let mut st: Vec<Item> = Vec::new();
    let mut memo: std::collections::HashMap<usize, Value> = Default::default();
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.u64()?;
            }
            b'.' => return pop(&mut st),
            b'(' => st.push(Item::Mark),
            b'}' => st.push(Item::V(Value::Dict(Vec::new()))),
            b']' => st.push(Item::V(Value::List(Vec::new()))),
            b')' => st.push(Item::V(Value::Tuple(Vec::new()))),
            b'N' => st.push(Item::V(Value::None)),
            0x88 => st.push(Item::V(Value::Bool(true))),
            0x89 => st.push(Item::V(Value::Bool(false))),
            b'K' => st.push(Item::V(Value::Int(r.u8()? as i64))),
            b'M' => st.push(Item::V(Value::Int(r.u16()? as i64))),
            b'J' => {
                let v = r.u32()? as u32 as i32;
                st.push(Item::V(Value::Int(v as i64)))
            }
            0x8a => {
                let n = r.u8()? as usize;
                let s = r.take(n)?;
                if n > 8 {
                    return Err("integer too large".into());
                }
                let mut buf = if s.last().is_some_and(|&b| b & 0x80 != 0) {
                    [0xffu8; 8]
                } else {
                    [0u8; 8]
                };
                buf[..n].copy_from_slice(s);
                st.push(Item::V(Value::Int(i64::from_le_bytes(buf))))
            }
            b'G' => {
                let s = r.take(8)?;
                let v = f64::from_be_bytes(s.try_into().map_err(|_| "truncated")?);
                st.push(Item::V(Value::Float(v)))
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()?,
                    0x8c => r.u8()? as usize,
                    _ => r.u64()?,
                };
                let s = String::from_utf8_lossy(r.take(n)?).into_owned();
                st.push(Item::V(Value::Str(s)))
            }
            b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'T' | b'B' => r.u32()?,
                    b'U' | b'C' => r.u8()? as usize,
                    _ => r.u64()?,
                };
                st.push(Item::V(Value::Bytes(r.take(n)?.to_vec())))
            }
            b'c' => {
                let m = r.line()?;
                let n = r.line()?;
                st.push(Item::V(Value::Global(m, n)))
            }
            0x93 => {
                let n = pop(&mut st)?;
                let m = pop(&mut st)?;
                let (Some(m), Some(n)) = (text(&m), text(&n)) else {
                    return Err("STACK_GLOBAL of non-strings".into());
                };
                st.push(Item::V(Value::Global(m, n)))
            }
            b'R' => {
                let args = pop(&mut st)?;
                let f = pop(&mut st)?;
                st.push(Item::V(reduce(f, args)?))
            }
            b'b' => {
                let state = pop(&mut st)?;
                let obj = pop(&mut st)?;
                st.push(Item::V(build(obj, state)?))
            }
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => r.u8()? as usize,
                    b'r' => r.u32()?,
                    _ => memo.len(),
                };
                match st.last() {
                    Some(Item::V(v)) => {
                        memo.insert(k, v.clone());
                    }
                    _ => return Err("memo of a mark".into()),
                }
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    r.u8()? as usize
                } else {
                    r.u32()?
                };
                let v = memo.get(&k).cloned().ok_or("unknown memo entry")?;
                st.push(Item::V(v))
            }
            b't' => {
                let items = pop_mark(&mut st)?;
                st.push(Item::V(Value::Tuple(items)))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut st)?);
                }
                items.reverse();
                st.push(Item::V(Value::Tuple(items)))
            }
            b's' | b'u' => {
                let pairs = if op == b's' {
                    let v = pop(&mut st)?;
                    let k = pop(&mut st)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut st)?
                };
                match st.last_mut() {
                    Some(Item::V(Value::Dict(d))) => {
                        let mut it = pairs.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("SETITEM on something that is not a dict".into()),
                }
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut st)?]
                } else {
                    pop_mark(&mut st)?
                };
                match st.last_mut() {
                    Some(Item::V(Value::List(l))) => l.extend(items),
                    _ => return Err("APPEND on something that is not a list".into()),
                }
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} at byte {} is not supported",
                    r.i - 1
                ))
            }
        }
    }
}
