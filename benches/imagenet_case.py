"""An ImageNet-size case for `compress`, made the way a user has one: a
torchvision ResNet-50 (or another torchvision classifier, 10 classes)
trained briefly on a 224×224 ImageFolder and exported with PyTorch's
default call (fixed batch 1, BN folded). The
folder is Fashion-MNIST upscaled to 224×224 RGB (60 training and 20
validation images per class); not bundled (94 MB model). Not run by CI.

    .venv/bin/python benches/imagenet_case.py [--out DIR] [--epochs 4] [--model resnet50]
    target/release/sss-onnx compress DIR/resnet50.onnx --data DIR/data --steps 20

Writes DIR/data/{train,val}/c<k>/*.png and DIR/<model>.onnx.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def idx(path):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8)


def make_folder(fmnist, out, per_class):
    for split, images, labels in [("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                                  ("val", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]:
        x = idx(os.path.join(fmnist, images))[16:].reshape(-1, 28, 28)
        y = idx(os.path.join(fmnist, labels))[8:]
        want = per_class[split]
        count = {}
        for i, c in enumerate(y.tolist()):
            if count.get(c, 0) >= want:
                continue
            count[c] = count.get(c, 0) + 1
            d = os.path.join(out, split, f"c{c}")
            os.makedirs(d, exist_ok=True)
            Image.fromarray(x[i]).convert("RGB").resize((224, 224), Image.BILINEAR).save(os.path.join(d, f"{i}.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, ".data", "imagenet-case"))
    ap.add_argument("--fmnist", default=os.path.join(ROOT, ".data", "fashion-mnist"))
    ap.add_argument("--model", default="resnet50",
                    choices=["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "efficientnet_b0"])
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 2)
    data = os.path.join(a.out, "data")
    if not os.path.isdir(data):
        make_folder(a.fmnist, data, {"train": 60, "val": 20})
    tf = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    train = torchvision.datasets.ImageFolder(os.path.join(data, "train"), tf)
    val = torchvision.datasets.ImageFolder(os.path.join(data, "val"), tf)
    model = getattr(torchvision.models, a.model)(num_classes=10)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=a.epochs * len(loader))
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(val, batch_size=50):
                correct += (model(x).argmax(1) == y).sum().item()
        print(f"epoch {epoch}: loss {loss.item():.3f}, val top-1 {correct / len(val):.3f}, {time.time() - t0:.0f} s", flush=True)
    path = os.path.join(a.out, f"{a.model}.onnx")
    # PyTorch's default export call: batch fixed at 1, BatchNorm folded
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), path, dynamo=False)
    print(path)


if __name__ == "__main__":
    main()
