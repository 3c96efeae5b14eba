"""PyTorch CPU reference for `cargo bench --bench train_step`: the same
CIFAR ResNet-20 (option A, BN kept), batch 128, f32, one SGD step per
iteration, the machine's threads. Not run by CI.

    .venv/bin/python benches/pytorch_train_step.py [batch] [steps]
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from make_fixtures import CifarResNet  # noqa: E402

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.manual_seed(0)
model = CifarResNet(3, shortcut="A").train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
x = torch.randn(batch, 3, 32, 32)
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
print(f"pytorch {torch.__version__}, threads {torch.get_num_threads()}, batch {batch}: "
      f"step {step * 1e3:.1f} ms = {batch / step:.1f} images/s")
