"""PyTorch CPU reference for `cargo bench --bench train_step`: the same
model (default the CIFAR ResNet-20, option A, BN kept, batch 128; the
fixture's tiny VisionTransformer (vit_tiny, 32×32); or
torchvision's resnet18 / resnet50 / resnext50_32x4d / mobilenet_v2 /
efficientnet_b0 at 224×224, 1000
classes), f32, one Nesterov SGD step per iteration, the machine's
threads; prints images/s and peak RSS. Not run by CI.

    .venv/bin/python benches/pytorch_train_step.py [batch] [steps] [model]
"""
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from make_fixtures import CifarResNet, vit_tiny  # noqa: E402

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
name = sys.argv[3] if len(sys.argv) > 3 else "resnet20"
torch.manual_seed(0)
if name == "resnet20":
    model, side = CifarResNet(3, shortcut="A").train(), 32
elif name == "vit_tiny":
    model, side = vit_tiny().train(), 32
else:
    import torchvision
    ctor = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50,
            "resnext50": torchvision.models.resnext50_32x4d,
            "mobilenet_v2": torchvision.models.mobilenet_v2,
            "efficientnet_b0": torchvision.models.efficientnet_b0}[name]
    model, side = ctor(num_classes=1000).train(), 224
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
x = torch.randn(batch, 3, side, side)
y = torch.arange(batch) % 10
times = []
for i in range(steps + 1):
    t = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i > 0:
        times.append(time.perf_counter() - t)
step = sum(times) / len(times)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"pytorch {torch.__version__}, {name}, threads {torch.get_num_threads()}, batch {batch}: "
      f"step {step * 1e3:.1f} ms = {batch / step:.1f} images/s, peak RSS {peak:.0f} MB")
