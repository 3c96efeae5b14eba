#!/usr/bin/env python3
"""The accuracy-latency frontier: `sss-onnx compress` against Torch-Pruning
(PyPI `torch-pruning`) and onnxsim's ONNX structured pruning (PyPI
`onnxsim`, `--onnxsim`) on the same trained CIFAR ResNet or MobileNetV2,
the same data (full Fashion-MNIST, padded as the base was trained), the
same training budget (epochs of the
training set, batch 128, NAG, cosine from the same learning rate) and the
same measurement: top-1 on the 10 000 test images in ONNX Runtime, latency
in ONNX Runtime at batch 1 and 32 with 1 and 2 threads, each model timed
interleaved with the original (pairs, not more: several ORT sessions
spinning at once on 2 cores distort each other).

    .venv/bin/python benches/frontier.py --model resnet56 --out docs/notebook/frontier
    .venv/bin/python benches/frontier.py --model resnet20 --targets 0.75,0.5,0.35
    .venv/bin/python benches/frontier.py --model mobilenet_v2 --target-kind latency \
        --targets 0.7,0.5 --peers l1-uniform@0.7+0.5 --onnxsim 0.7+0.5

Not run by CI (tens of minutes). Needs the release binary
(`cargo build --release`), the full Fashion-MNIST (`scripts/fetch-fashion-mnist.sh`)
and the packages of `fixtures/requirements.txt` plus `torch-pruning`.

Torch-Pruning prunes what users prune with it on these nets: the inner
channels of every residual block (conv1 of the block, its BN and conv2's
input); the residual stream is left alone (the option-A shortcut pads
channels, and every block's output is tied to it). Importance: L1 magnitude
or first-order Taylor, per layer ("uniform") or ranked across layers
("global"); the pruning ratio is found by bisection to reach the same MACs
as the `compress` point it is compared with.
"""

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
import make_fixtures as mf  # noqa: E402  (the architectures and data helpers)

import torch_pruning as tp  # noqa: E402

BATCH = 128


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The base model: PyTorch weights for the peer, the BN-folded export (what
# PyTorch's default export gives users) for sss-onnx
# --------------------------------------------------------------------------
def from_unfolded_export(model, path):
    """Loads PyTorch weights from an export without constant folding (its
    initializers carry the state dict's names)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
    r = model.load_state_dict(state, strict=False)
    missing = [k for k in r.missing_keys if not k.endswith("num_batches_tracked")]
    assert not missing, missing
    model.eval()
    return model


# Per model: the preprocessing its base was trained with (the padding of
# 28×28 to 32×32), and the layers Torch-Pruning must leave alone.
PAD = {"resnet56": "black", "resnet20": "black", "mobilenet_v2": "mean"}


def prep_of(name):
    return mf.to_model_input if PAD[name] == "mean" else mf.to_model_input_black


def base_model(name, work, fmnist):
    if name == "mobilenet_v2":
        # the trained fixture: torchvision's MobileNetV2 at width 0.25, stem
        # at stride 1; the folded export is what users hand to sss-onnx
        model = from_unfolded_export(
            mf.cifar_mobilenet_v2(0.25),
            os.path.join(ROOT, "fixtures", "mobilenet_v2_fmnist.legacy17bn.onnx"),
        )
        return model, os.path.join(ROOT, "fixtures", "mobilenet_v2_fmnist.legacy13.onnx")
    if name == "resnet56":
        model = mf.CifarResNet(9, shortcut="A")
        import onnx
        from onnx import numpy_helper

        m = onnx.load(os.path.join(ROOT, "fixtures", "resnet56_fmnist.legacy17bn.onnx"))
        state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
        missing = model.load_state_dict(state, strict=False)
        assert not missing.missing_keys, missing.missing_keys
        onnx_path = os.path.join(ROOT, "fixtures", "resnet56_fmnist.legacy13.onnx")
        model.eval()
        return model, onnx_path
    if name == "resnet20":
        pt = os.path.join(work, "resnet20_base.pt")
        model = mf.CifarResNet(3, shortcut="A")
        if os.path.exists(pt):
            model.load_state_dict(torch.load(pt))
        else:
            log("resnet20: training the base model (2 epochs, black padding)")
            torch.manual_seed(11)
            mf.train_fmnist_with(model, fmnist, 2, 11, mf.to_model_input_black)
            torch.save(model.state_dict(), pt)
        model.eval()
        onnx_path = os.path.join(work, "resnet20_base.onnx")
        if not os.path.exists(onnx_path):
            mf.export_legacy(model, torch.randn(2, 3, 32, 32), onnx_path, 13, fold=True)
        return model, onnx_path
    raise SystemExit(f"unknown model {name}")


def data(fmnist, prep):
    tx = mf.read_idx(f"{fmnist}/train-images-idx3-ubyte.gz")
    ty = mf.read_idx(f"{fmnist}/train-labels-idx1-ubyte.gz")
    vx = mf.read_idx(f"{fmnist}/t10k-images-idx3-ubyte.gz")
    vy = mf.read_idx(f"{fmnist}/t10k-labels-idx1-ubyte.gz")
    X = torch.from_numpy(prep(tx))
    Y = torch.from_numpy(ty.astype(np.int64))
    VX = prep(vx).astype(np.float32)
    return X, Y, VX, vy.astype(np.int64)


# --------------------------------------------------------------------------
# Measurement (the same for every model)
# --------------------------------------------------------------------------
def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def top1(path, VX, VY):
    s = session(path, 0)
    name = s.get_inputs()[0].name
    correct = 0
    for i in range(0, len(VX), 500):
        correct += int((s.run(None, {name: VX[i : i + 500]})[0].argmax(1) == VY[i : i + 500]).sum())
    return correct / len(VX)


def latency_pair(orig, model, batch, threads, runs):
    """Median latency (ms) of the original and the model, run alternately."""
    sa, sb = session(orig, threads), session(model, threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    na, nb = sa.get_inputs()[0].name, sb.get_inputs()[0].name
    for _ in range(5):
        sa.run(None, {na: x})
        sb.run(None, {nb: x})
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        sa.run(None, {na: x})
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        sb.run(None, {nb: x})
        tb.append(time.perf_counter() - t)
    return float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3


def macs_of(model):
    m, _ = tp.utils.count_ops_and_params(model, torch.randn(1, 3, 32, 32))
    return int(m)


# --------------------------------------------------------------------------
# sss-onnx
# --------------------------------------------------------------------------
def ours(base_onnx, fmnist, target, epochs, seed, out_dir, extra, kind="macs", pad="black"):
    tag = "".join(c for c in "_".join(extra) if c.isalnum() or c in "._")
    kind_tag = "" if kind == "macs" else f"_{kind}"
    out = os.path.join(out_dir, f"sss_{target}{kind_tag}_s{seed}{'_' + tag if tag else ''}.onnx")
    cmd = [
        os.path.join(ROOT, "target", "release", "sss-onnx"), "compress", base_onnx,
        "--data", fmnist, "--pad-value", pad, f"--target-{kind}", str(target),
        "--epochs", str(epochs), "--seed", str(seed), "-o", out, "--dynamic-batch",
        "--bench-batch", "1", "--bench-iters", "2", "--json", *extra,
    ]
    log("$", " ".join(cmd))
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        log(r.stderr[-3000:])
        return None
    rep = json.loads(r.stdout)
    lt = rep["settings"].get("latency_target") or {}
    return {
        "method": "sss-onnx" + ("" if kind == "macs" else f" {kind}") + (" " + " ".join(extra) if extra else ""),
        "predicted_latency": lt.get("predicted"),
        "target_macs": target,
        "file": out,
        "macs": rep["pruned"]["macs"],
        "macs_ratio": rep["pruned"]["macs"] / rep["original"]["macs"],
        "train_seconds": rep["training"]["seconds"],
        "wall_seconds": time.time() - t,
        "steps": rep["training"]["steps"],
    }


# --------------------------------------------------------------------------
# Torch-Pruning
# --------------------------------------------------------------------------
def ignored(model):
    """ResNets: the stem, the head and every block's last conv (the
    residual stream, which option A's padding shortcut ties together). A
    MobileNetV2: the classifier alone, as Torch-Pruning's own MobileNetV2
    examples leave it: its dependency graph couples the expansion channels
    through the depthwise convs and each stage's residual stream through
    its Adds, and prunes both."""
    if hasattr(model, "classifier"):
        return [model.classifier[-1]]
    return [model.conv1, model.fc] + [b.conv2 for b in model.layers]


def taylor_grads(model, X, Y, batches=8):
    model.zero_grad()
    model.train()
    for i in range(batches):
        idx = slice(i * BATCH, (i + 1) * BATCH)
        F.cross_entropy(model(X[idx]), Y[idx]).backward()
    model.eval()


def tp_prune(model, ratio, importance, global_pruning, X, Y, round_to=None):
    m = copy.deepcopy(model)
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=1)
    if importance == "taylor":
        taylor_grads(m, X, Y)
    pruner = tp.pruner.MetaPruner(
        m, torch.randn(1, 3, 32, 32), importance=imp, pruning_ratio=ratio,
        global_pruning=global_pruning, ignored_layers=ignored(m),
        max_pruning_ratio=0.95, round_to=round_to,
    )
    pruner.step()
    m.zero_grad()
    return m


def bisect(prune_at, target_macs):
    """Bisection on a pruning ratio in [0, 0.95] for `target_macs`:
    `prune_at(ratio)` gives (model, MACs); the closest (model, MACs,
    ratio) found."""
    lo, hi = 0.0, 0.95
    best = None
    for _ in range(10):
        mid = (lo + hi) / 2
        m, mac = prune_at(mid)
        if best is None or abs(mac - target_macs) < abs(best[1] - target_macs):
            best = (m, mac, mid)
        if mac > target_macs:
            lo = mid
        else:
            hi = mid
        if abs(mac - target_macs) / target_macs < 0.005:
            break
    return best


def tp_to_macs(model, target_macs, importance, global_pruning, X, Y, round_to=None):
    """Bisection on the pruning ratio for the MACs of `target_macs`."""
    def at(ratio):
        m = tp_prune(model, ratio, importance, global_pruning, X, Y, round_to)
        return m, macs_of(m)

    return bisect(at, target_macs)


def finetune(model, X, Y, epochs, lr, seed):
    """The budget `compress` gets: epochs × (samples / 128) steps of NAG
    (momentum 0.9, weight decay 1e-4), cosine from `lr` to 0, random crop
    (pad 4) and flip."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    steps = math.ceil(epochs * len(X) / BATCH)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    perm = torch.randperm(len(X))
    pos = 0
    t = time.time()
    for step in range(steps):
        if pos + BATCH > len(X):
            perm, pos = torch.randperm(len(X)), 0
        idx = perm[pos : pos + BATCH]
        pos += BATCH
        xb = F.pad(X[idx], (4, 4, 4, 4))
        dx, dy = rng.integers(0, 9, 2)
        xb = xb[:, :, dy : dy + 32, dx : dx + 32]
        if rng.random() < 0.5:
            xb = xb.flip(3)
        loss = F.cross_entropy(model(xb), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"  step {step}/{steps} loss {loss.item():.3f}")
    model.eval()
    return steps, time.time() - t


def peer(model, X, Y, target_macs, macs0, importance, global_pruning, epochs, lr, seed, out_dir, round_to=None):
    r8 = f"_r{round_to}" if round_to else ""
    name = f"tp_{importance}_{'global' if global_pruning else 'uniform'}{r8}_{target_macs:.3f}"
    m, mac, ratio = tp_to_macs(model, target_macs * macs0, importance, global_pruning, X, Y, round_to)
    log(f"{name}: ratio {ratio:.3f}, MACs {mac / macs0:.3f}; fine-tuning")
    steps, secs = finetune(m, X, Y, epochs, lr, seed)
    path = os.path.join(out_dir, name + ".onnx")
    mf.export_legacy(m, torch.randn(2, 3, 32, 32), path, 13, fold=True)
    return {
        "method": f"Torch-Pruning {tp.__version__} {importance} {'global' if global_pruning else 'uniform'}"
                  + (f" round_to={round_to}" if round_to else ""),
        "target_macs": target_macs,
        "ratio": ratio,
        "file": path,
        "macs": mac,
        "macs_ratio": mac / macs0,
        "train_seconds": secs,
        "steps": steps,
    }


# --------------------------------------------------------------------------
# onnxsim's ONNX-native structured pruning
# --------------------------------------------------------------------------
def onnx_macs(path):
    """MACs at batch 1, counted by `sss-onnx inspect` (the same count for
    every method's file)."""
    r = subprocess.run([os.path.join(ROOT, "target", "release", "sss-onnx"), "inspect", path, "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["macs"]


def onnxsim_prepared(base_onnx, work):
    """The base as onnxsim's pruning wants it: simplified, and its Constant
    nodes as initializers (its Wanda path passes a Clip only when the
    bounds are initializers, else it leaves MobileNetV2's expansion
    channels alone)."""
    import onnx
    import onnxsim
    from onnx import numpy_helper

    m, ok = onnxsim.simplify(onnx.load(base_onnx))
    assert ok
    keep = []
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    path = os.path.join(work, "onnxsim_base.onnx")
    onnx.save(m, path)
    return m, path


def onnxsim_peer(base_onnx, X, target_macs, macs0, epochs, lr, seed, pad, fmnist, work, finetune_too):
    """Wanda-style structured pruning (‖W row‖·‖X‖ per channel, the same
    fraction of every chain) on 64 training images, the sparsity bisected
    to the target MACs, then its closed-form repair (a ridge refit of the
    MatMul/Gemm layers toward the original's outputs); optionally the same
    fine-tuning budget as the others, by `sss-onnx train` (NAG, cosine, no
    gates), since onnxsim has no trainer."""
    import onnx
    import onnxsim

    prepared, _ = onnxsim_prepared(base_onnx, work)
    name = prepared.graph.input[0].name
    calib = [{name: X[i : i + 1].numpy().astype(np.float32)} for i in range(64)]
    def at(sparsity):
        pruned = onnxsim.apply_structured_wanda_pruning(prepared, calibration_data=calib, num_samples=len(calib),
                                                        seed=seed, sparsity=sparsity)
        path = os.path.join(work, "onnxsim_probe.onnx")
        onnx.save(pruned, path)
        return pruned, onnx_macs(path)

    pruned, mac, sparsity = bisect(at, target_macs)
    t = time.time()
    repaired = onnxsim.apply_pruning_finetune(prepared, pruned, calibration_data=calib, num_samples=len(calib),
                                              seed=seed)
    tag = f"onnxsim_wanda_{target_macs / macs0:.3f}"
    path = os.path.join(work, tag + ".onnx")
    onnx.save(repaired, path)
    rows = [{
        "method": f"onnxsim {onnxsim.__version__} Wanda + repair",
        "target_macs": round(target_macs / macs0, 3),
        "sparsity": sparsity,
        "file": path,
        "macs": mac,
        "macs_ratio": mac / macs0,
        "train_seconds": time.time() - t,
        "steps": 0,
    }]
    if finetune_too:
        tuned = os.path.join(work, tag + "_tuned.onnx")
        cmd = [os.path.join(ROOT, "target", "release", "sss-onnx"), "train", path, "--data", fmnist,
               "--pad-value", pad, "--epochs", str(epochs), "--lr", str(lr), "--seed", str(seed),
               "-o", tuned, "--dynamic-batch"]
        log("$", " ".join(cmd))
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(r.stderr[-3000:])
        else:
            rows.append(dict(rows[0], method=rows[0]["method"] + " + fine-tune (sss-onnx train)", file=tuned,
                             train_seconds=time.time() - t, steps=math.ceil(epochs * len(X) / BATCH)))
    return rows


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def table(rows, base):
    lines = [
        "| method | MACs | top-1 (Δ pt) | ORT b1 1t / 2t | ORT b32 1t / 2t | train s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| original | {base['macs'] / 1e6:.1f} M | {base['top1'] * 100:.2f} % | 1.00× / 1.00× | 1.00× / 1.00× | |",
    ]
    for r in sorted(rows, key=lambda r: -r["speedup"]["b32_t2"]):
        s = r["speedup"]
        lines.append(
            f"| {r['method']} @ {r['target_macs']} | {r['macs_ratio']:.3f}× | "
            f"{r['top1'] * 100:.2f} % ({(r['top1'] - base['top1']) * 100:+.2f}) | "
            f"{s['b1_t1']:.2f}× / {s['b1_t2']:.2f}× | {s['b32_t1']:.2f}× / {s['b32_t2']:.2f}× | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows, base, path, title):
    """Accuracy against speed-up at batch 1 and 32 with one thread (two
    threads on two cores swing by ±30 % between sittings: in the table),
    SVG by hand."""
    W, H, M = 760, 360, 60
    panels = [("b1_t1", "batch 1, 1 thread"), ("b32_t1", "batch 32, 1 thread")]
    pw = (W - M) / 2
    accs = [r["top1"] for r in rows] + [base["top1"]]
    lo, hi = min(accs) - 0.005, max(accs) + 0.005
    sp = [r["speedup"][k] for r in rows for k, _ in panels] + [1.0]
    smax = max(sp) * 1.08
    colour = lambda m: "#3b6ea5" if m.startswith("sss") else ("#c0504d" if "l1" in m else "#d08a2a")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    for p, (key, label) in enumerate(panels):
        x0 = M + p * pw
        sx = lambda v: x0 + 10 + (v - 0.9) / (smax - 0.9) * (pw - 40)
        sy = lambda a: H - M - (a - lo) / (hi - lo) * (H - 2 * M)
        out.append(f'<line x1="{x0 + 10}" y1="{H - M}" x2="{x0 + pw - 20}" y2="{H - M}" stroke="black"/>')
        out.append(f'<line x1="{x0 + 10}" y1="{M}" x2="{x0 + 10}" y2="{H - M}" stroke="black"/>')
        out.append(f'<text x="{x0 + pw / 2}" y="{H - M + 35}" text-anchor="middle">ORT speed-up over the original, {label}</text>')
        for k in range(5):
            a = lo + (hi - lo) * k / 4
            out.append(f'<text x="{x0 + 6}" y="{sy(a) + 4:.1f}" text-anchor="end" font-size="10">{a * 100:.1f}</text>')
            v = 1.0 + (smax - 1.0) * k / 4
            out.append(f'<text x="{sx(v):.1f}" y="{H - M + 15}" text-anchor="middle" font-size="10">{v:.2f}×</text>')
        out.append(f'<circle cx="{sx(1.0):.1f}" cy="{sy(base["top1"]):.1f}" r="5" fill="black"/>')
        for r in rows:
            c = colour(r["method"].lower())
            out.append(f'<circle cx="{sx(r["speedup"][key]):.1f}" cy="{sy(r["top1"]):.1f}" r="5" fill="{c}"/>')
            out.append(f'<text x="{sx(r["speedup"][key]) + 7:.1f}" y="{sy(r["top1"]) - 6:.1f}" font-size="9" fill="{c}">{r["target_macs"]}</text>')
    out.append(f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">top-1 on 10 000 test images (%)</text>')
    legend = [("original", "black"), ("sss-onnx compress", "#3b6ea5"), ("Torch-Pruning L1", "#c0504d"), ("Torch-Pruning Taylor", "#d08a2a")]
    for i, (t, c) in enumerate(legend):
        out.append(f'<circle cx="{M + 20 + 170 * i}" cy="38" r="5" fill="{c}"/><text x="{M + 30 + 170 * i}" y="42" fill="{c}">{t}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56", choices=["resnet56", "resnet20", "mobilenet_v2"])
    ap.add_argument("--fmnist", default=os.path.join(ROOT, ".data", "fashion-mnist"))
    ap.add_argument("--targets", default="0.75,0.5,0.35")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.005, help="peak learning rate, both methods")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peers", default="l1-uniform@all,l1-global@0.5,taylor-uniform@0.5,taylor-global@0.5",
                    help="Torch-Pruning variants and the targets they run at (all or a list); "
                         "a -r8 suffix keeps its channel counts multiples of 8 (its round_to)")
    ap.add_argument("--onnxsim", default="none",
                    help="onnxsim Wanda pruning at these MACs fractions (all, none or a + list), with its repair, "
                         "and again fine-tuned with the same budget")
    ap.add_argument("--ours-extra", default="", help="extra compress flags, space separated")
    ap.add_argument("--no-ours", action="store_true", help="peers only (with --append: add them to the runs)")
    ap.add_argument("--target-kind", default="macs", choices=["macs", "latency"],
                    help="--targets are fractions of the MACs or of the ORT latency (batch 32, 1 thread)")
    ap.add_argument("--train-only", action="store_true", help="train and record; measure in a later --skip-train run")
    ap.add_argument("--threads", type=int, default=2,
                    help="training threads, both methods (measurement sets its own)")
    ap.add_argument("--runs", type=int, default=200, help="timed runs at batch 1 (batch 32: a quarter)")
    ap.add_argument("--work", default=os.path.join(ROOT, ".data", "frontier"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "notebook", "frontier"))
    ap.add_argument("--skip-train", action="store_true", help="reuse the models in --work (re-measure only)")
    ap.add_argument("--append", action="store_true", help="add these runs to the ones in --work, then measure all")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out's JSON")
    a = ap.parse_args()
    if a.plot_only:
        j = json.load(open(os.path.join(a.out, f"{a.model}.json")))
        when = j["head"].split(", ")[3]
        plot(j["rows"], j["original"], os.path.join(a.out, f"{a.model}.svg"),
             f"{a.model}: accuracy vs ORT speed-up ({a.epochs} epoch, {when})")
        return
    torch.set_num_threads(a.threads)
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)  # compress's training
    a.work = os.path.join(a.work, a.model)  # one model's files never meet another's
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    model, base_onnx = base_model(a.model, a.work, a.fmnist)
    X, Y, VX, VY = data(a.fmnist, prep_of(a.model))
    macs0 = macs_of(model)
    targets = [float(t) for t in a.targets.split(",")]
    state = os.path.join(a.work, f"{a.model}_runs.json")
    keep = (a.skip_train or a.append) and os.path.exists(state)
    rows = json.load(open(state)) if keep else []
    if not a.skip_train:
        extra = a.ours_extra.split() if a.ours_extra else []
        for t in [] if a.no_ours else targets:
            r = ours(base_onnx, a.fmnist, t, a.epochs, a.seed, a.work, extra, a.target_kind, PAD[a.model])
            if r:
                rows.append(r)
        for spec in [p for p in a.peers.split(",") if p and p != "none"]:
            variant, at = spec.split("@")
            # importance-scope, and -r<N> to keep channel counts multiples of N
            imp, scope, *rest = variant.split("-")
            round_to = int(rest[0][1:]) if rest else None
            for t in targets if at == "all" else [float(x) for x in at.split("+")]:
                rows.append(peer(model, X, Y, t, macs0, imp, scope == "global", a.epochs, a.lr, a.seed, a.work,
                                 round_to))
        if a.onnxsim != "none":
            for t in targets if a.onnxsim == "all" else [float(x) for x in a.onnxsim.split("+")]:
                rows.extend(onnxsim_peer(base_onnx, X, t * onnx_macs(base_onnx), onnx_macs(base_onnx), a.epochs,
                                         a.lr, a.seed, PAD[a.model], a.fmnist, a.work, True))
        json.dump(rows, open(state, "w"), indent=1)
        if a.train_only:
            return
    # measurement, all models in one sitting
    base = {"macs": macs0, "top1": top1(base_onnx, VX, VY)}
    log(f"original: top-1 {base['top1']:.4f}")
    for r in rows:
        r["top1"] = top1(r["file"], VX, VY)
        r["speedup"] = {}
        for b, t in [(1, 1), (1, 2), (32, 1), (32, 2)]:
            ms0, ms1 = latency_pair(base_onnx, r["file"], b, t, a.runs if b == 1 else max(20, a.runs // 4))
            r["speedup"][f"b{b}_t{t}"] = ms0 / ms1
            r.setdefault("ms", {})[f"b{b}_t{t}"] = [ms0, ms1]
        log(f"{r['method']} @ {r['target_macs']}: top-1 {r['top1']:.4f}, b32 2t {r['speedup']['b32_t2']:.2f}×")
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    when = time.strftime("%Y-%m-%d")
    head = (f"{a.model}, {a.epochs} epoch(s) of full Fashion-MNIST, seed {a.seed}, {when}, {cpu} "
            f"({os.cpu_count()} cores), onnxruntime {ort.__version__}, torch {torch.__version__}, "
            f"torch-pruning {tp.__version__}")
    md = f"{head}\n\n{table(rows, base)}\n"
    with open(os.path.join(a.out, f"{a.model}.md"), "w") as f:
        f.write(md)
    json.dump({"head": head, "original": base, "rows": rows}, open(os.path.join(a.out, f"{a.model}.json"), "w"), indent=1)
    plot(rows, base, os.path.join(a.out, f"{a.model}.svg"), f"{a.model}: accuracy vs ORT speed-up ({a.epochs} epoch, {when})")
    print(md)


if __name__ == "__main__":
    main()
