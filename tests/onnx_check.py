"""Checks a model with onnx's own tools (an independent reader):
full checker, strict shape inference, every Conv output fully shaped.
Usage: onnx_check.py MODEL [--external]   (exit 1 with the reason)."""
import sys

import onnx

path = sys.argv[1]
want_external = "--external" in sys.argv[2:]
m = onnx.load(path, load_external_data=False)
external = any(
    t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer
)
if external != want_external:
    sys.exit(f"{path}: external data {external}, expected {want_external}")
m = onnx.load(path)
onnx.checker.check_model(m, full_check=True)
inf = onnx.shape_inference.infer_shapes(m, strict_mode=True)
shapes = {}
for v in list(inf.graph.value_info) + list(inf.graph.output):
    dims = v.type.tensor_type.shape.dim
    shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
convs = [n.output[0] for n in inf.graph.node if n.op_type == "Conv"]
missing = [c for c in convs if c not in shapes or any(d is None for d in shapes[c][1:])]
if not convs or missing:
    sys.exit(f"{path}: {len(convs)} convs, without a full shape: {missing}")
print(f"ok: {len(convs)} convs fully shaped; input {shapes.get(m.graph.input[0].name)}")
