"""Exports a torchvision classifier at 224×224, 1000 classes, random
weights, BatchNorm kept and the batch dynamic (opset 17, constants not
folded), for `cargo bench --bench train_step -- FILE` on a family not built
in code. Not run by CI.

    .venv/bin/python benches/export_torchvision.py efficientnet_b0 .data/efficientnet_b0_224.onnx
"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_fixtures as mf  # noqa: E402

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = getattr(torchvision.models, name)(num_classes=1000).eval()
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
mf.export_legacy(model, torch.randn(2, 3, 224, 224), out, 17, fold=False)
print(f"wrote {out}")
