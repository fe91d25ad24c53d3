#!/usr/bin/env python
"""Time npvae's ConvVAE against the same network in PyTorch, and each convolution against torch's.

Rows:

* **epoch**: one epoch of the ConvVAE (``npvae.models.ConvVAE``, MNIST: Conv(1->32, 4, s2, p1)
  -> ReLU -> Conv(32->64) -> ReLU -> Flatten -> [Linear(3136->400) -> ReLU] -> Linear ->
  [mu, logvar]; the decoder mirrors it with ConvTranspose2d; ``--hidden 400`` as the demo's
  default, ``--hidden 0`` for none), Bernoulli decoder, per-example mean -ELBO, Adam lr 1e-3,
  batch 128, float32, dynamically binarized MNIST through ``npvae.data.minibatches`` (same
  seed: same batches) inside the timed loop. PyTorch runs the same layers (``nn.Conv2d``,
  ``nn.ConvTranspose2d``, ``nn.Linear``) from npvae's initial weights (copied in), the same
  loss with logvar clipped to [-20, 10], ``torch.optim.Adam``. Only the Gaussian noise comes
  from each framework's own generator. ``--rounds`` rounds alternate npvae, PyTorch, npvae,
  ... in fresh subprocesses; each subprocess runs ``--warmup-steps`` untimed steps, then
  ``--epochs`` timed epochs; the table gives medians over all rounds.
* **layers**: each convolution of the ConvVAE at its shapes (batch 128, float32), forward +
  backward (dL/dx, dL/dW, dL/db), npvae against ``torch.nn.functional.conv2d`` /
  ``conv_transpose2d`` with autograd, medians of ``--layer-reps`` repetitions. For npvae
  the same call is split into its parts: im2col (the window view and its copy), the
  matmuls, col2im, and the rest (padding, transposes, bias); "matmul floor" is the same
  matmuls timed alone, on arrays prepared beforehand.
* **FAST_COL2IM**: the epoch row of npvae with :data:`npvae.conv.FAST_COL2IM` on and off,
  alternated in fresh subprocesses (the flag must save >= 5 % of a row to stay).

Every subprocess sets ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``
(``--threads``) before NumPy or torch is imported, and ``torch.set_num_threads`` to the same
number; each reports its own peak RSS. Helpers (machine, commit, versions, other-load
window) come from ``bench_train.py``.

Usage::

    python benchmarks/bench_conv.py --data-dir /path/to/mnist                 # about 6 min on 2 cores
    python benchmarks/bench_conv.py --rounds 1 --train-images 2560 --out /tmp/c.json   # smoke test

Writes ``benchmarks/results/conv.json`` (``--out``) and prints a table. Run it on an otherwise
idle machine: the "other" column is the CPUs other processes used during the timed region.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import bench_train as bt  # noqa: E402  (stdlib-only at import: the parent never loads NumPy)

#: the four convolutions of the MNIST ConvVAE at batch 128: (name, kind, in, out, input H, W)
LAYERS = [("enc conv1 1->32, 28->14", "conv", 1, 32, 28), ("enc conv2 32->64, 14->7", "conv", 32, 64, 14),
          ("dec convT1 64->32, 7->14", "convT", 64, 32, 7), ("dec convT2 32->1, 14->28", "convT", 32, 1, 14)]


# ======================================================================================
# worker side
# ======================================================================================

def build_npvae(spec):
    import numpy as np
    from npvae.models import ConvVAE
    hidden = tuple(h for h in spec["hidden"] if h > 0)
    return ConvVAE(784, spec["z_dim"], hidden, rng=np.random.default_rng(spec["seed"]), dtype=np.float32)


def build_torch(spec):
    """The same network in PyTorch, with npvae's initial weights for the same seed."""
    import numpy as np
    import torch
    from torch import nn
    from npvae.layers import Conv2d, ConvTranspose2d, Linear

    ref = build_npvae(spec)

    def torch_layer(layer):
        if isinstance(layer, Linear):
            t = nn.Linear(layer.in_features, layer.out_features)
            t.weight.data = torch.from_numpy(np.ascontiguousarray(layer.params["W"].T))
        elif isinstance(layer, ConvTranspose2d):
            t = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                   layer.padding, layer.output_padding)
            t.weight.data = torch.from_numpy(layer.params["W"].copy())
        elif isinstance(layer, Conv2d):
            t = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
            t.weight.data = torch.from_numpy(layer.params["W"].copy())
        elif type(layer).__name__ == "ReLU":
            return nn.ReLU()
        elif type(layer).__name__ == "Flatten":
            return nn.Flatten()
        elif type(layer).__name__ == "Unflatten":
            return nn.Unflatten(1, layer.shape)
        else:
            raise TypeError(type(layer).__name__)
        t.bias.data = torch.from_numpy(layer.params["b"].copy())
        return t

    class TorchConvVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(*[torch_layer(layer) for layer in ref.encoder])
            self.dec = nn.Sequential(*[torch_layer(layer) for layer in ref.decoder])
            self.z_dim = ref.z_dim

        def loss(self, x):
            """Per-example mean -ELBO, as npvae's ConvVAE.forward(...).loss with beta = 1, L = 1."""
            B = x.shape[0]
            h = self.enc(x)
            mu, logvar = h[:, :self.z_dim], torch.clamp(h[:, self.z_dim:], -20.0, 10.0)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            logits = self.dec(z)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / B
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / B
            return bce + kld

    torch.manual_seed(spec["seed"])
    return TorchConvVAE()


def worker_epoch(spec: dict) -> dict:
    import numpy as np
    from npvae import conv
    from npvae.data import load_mnist, minibatches

    conv.FAST_COL2IM = spec.get("fast_col2im", True)
    images = load_mnist("train", data_dir=spec["data_dir"], download=False)[0][:spec["train_images"]]
    rng = np.random.default_rng(spec["seed"] + 1)
    fw = spec["framework"]
    if fw == "npvae":
        from npvae.optim import Adam
        model = build_npvae(spec)
        opt = Adam(model.params, lr=1e-3)

        def step(x):
            terms = model.forward(x, rng=rng)
            opt.step(model.backward())
            return terms.loss
    else:
        import torch
        torch.set_num_threads(spec["threads"])
        model = build_torch(spec)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x):
            opt.zero_grad(set_to_none=True)
            lt = model.loss(torch.from_numpy(x))
            lt.backward()
            opt.step()
            return lt.item()

    warm = minibatches(images, 128, rng=np.random.default_rng(99), binarize="dynamic", dtype=np.float32)
    for _, x in zip(range(spec["warmup_steps"]), warm):
        step(x)
    epochs = []
    for _ in range(spec["epochs"]):
        loss, n = 0.0, 0
        with bt.Window() as w:
            for x in minibatches(images, 128, rng=rng, binarize="dynamic", dtype=np.float32):
                loss += step(x) * len(x)
                n += len(x)
        epochs.append({"wall_s": w.wall, "cpu_s": w.cpu, "other_cpus": w.other, "mean_loss": loss / n})
        bt.log(f"    {fw} epoch: {w.wall:.2f} s, loss {loss / n:.2f}, other load {bt.fmt(w.other)} CPUs")
    return {"epochs": epochs, "median_s": bt.median([e["wall_s"] for e in epochs]),
            "rss_peak_mb": bt.maxrss_mb()}


def _median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return bt.median(times)


def worker_layers(spec: dict) -> dict:
    """Forward + backward of each ConvVAE convolution: npvae (with its parts) and torch."""
    import numpy as np
    import torch
    from npvae import conv
    torch.set_num_threads(spec["threads"])
    rng = np.random.default_rng(0)
    B, reps, out = 128, spec["layer_reps"], []
    for name, kind, c_in, c_out, size in LAYERS:
        x = rng.standard_normal((B, c_in, size, size)).astype(np.float32)
        Layer = conv.Conv2d if kind == "conv" else conv.ConvTranspose2d
        layer = Layer(c_in, c_out, 4, 2, 1, rng=rng)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)

        def npvae_fb():
            layer.forward(x)
            layer.backward(dy)
        row = {"layer": name, "x": list(x.shape), "y": list(y.shape), "npvae_ms": 1e3 * _median_time(npvae_fb, reps)}
        # torch: the functional op and autograd's backward (dx, dW, db)
        xt = torch.from_numpy(x).requires_grad_(True)
        Wt = torch.from_numpy(layer.params["W"].copy()).requires_grad_(True)
        bt_ = torch.from_numpy(layer.params["b"].copy()).requires_grad_(True)
        dyt = torch.from_numpy(dy)
        f = torch.nn.functional.conv2d if kind == "conv" else torch.nn.functional.conv_transpose2d

        def torch_fb():
            for t in (xt, Wt, bt_):
                t.grad = None
            f(xt, Wt, bt_, stride=2, padding=1).backward(dyt)
        row["torch_ms"] = 1e3 * _median_time(torch_fb, reps)
        np.testing.assert_allclose(layer.forward(x), f(xt, Wt, bt_, stride=2, padding=1).detach().numpy(),
                                   rtol=0, atol=1e-4)
        row["ratio"] = row["npvae_ms"] / row["torch_ms"]
        row["parts_ms"] = npvae_parts(layer, x, dy, reps)
        out.append(row)
        bt.log(f"    {name}: npvae {row['npvae_ms']:.2f} ms, torch {row['torch_ms']:.2f} ms")
    return {"layers": out, "rss_peak_mb": bt.maxrss_mb(), "fast_col2im": conv.FAST_COL2IM}


def npvae_parts(layer, x, dy, reps) -> dict:
    """The layer's forward + backward split into im2col, matmuls, col2im and the rest (the matmul floor alone)."""
    import numpy as np
    from npvae import conv
    (kh, kw), s, p = layer.kernel_size, layer.stride, layer.padding
    B, C, H, W = x.shape
    A = layer.params["W"]
    timers = {"im2col": 0.0, "col2im": 0.0}
    orig = (conv.im2col, conv.col2im, conv.col2im_tap_major)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            timers[name] += time.perf_counter() - t
            return r
        return wrapper
    conv.im2col, conv.col2im, conv.col2im_tap_major = (timed("im2col", orig[0]), timed("col2im", orig[1]),
                                                       timed("col2im", orig[2]))
    try:
        layer.forward(x)
        layer.backward(dy)
        timers.update(im2col=0.0, col2im=0.0)
        total = 0.0
        for _ in range(reps):
            t = time.perf_counter()
            layer.forward(x)
            layer.backward(dy)
            total += time.perf_counter() - t
    finally:
        conv.im2col, conv.col2im, conv.col2im_tap_major = orig
    parts = {k: 1e3 * v / reps for k, v in timers.items()}
    # the matmul floor: the layer's three products on operands prepared beforehand
    rng = np.random.default_rng(1)
    if isinstance(layer, conv.ConvTranspose2d):
        n_rows, inner, cols_w = B * H * W, A.shape[0], A[0].size        # X (BHW, Cin) @ W (Cin, Cout k k)
    else:
        _, ho, wo = layer.output_shape(H, W)
        n_rows, inner, cols_w = B * ho * wo, A[0].size, A.shape[0]     # cols (B Ho Wo, C k k) @ W^T (C k k, O)
    P = rng.standard_normal((n_rows, inner)).astype(np.float32)
    Q = rng.standard_normal((inner, cols_w)).astype(np.float32)
    R = rng.standard_normal((n_rows, cols_w)).astype(np.float32)
    parts["matmul_floor"] = 1e3 * (_median_time(lambda: P @ Q, reps) + _median_time(lambda: P.T @ R, reps)
                                   + _median_time(lambda: R @ Q.T, reps))
    parts["total"] = 1e3 * total / reps
    parts["matmul_and_rest"] = parts["total"] - parts["im2col"] - parts["col2im"]
    return parts


def worker_main(spec_json: str, out_path: str) -> int:
    spec = json.loads(spec_json)
    fn = {"epoch": worker_epoch, "layers": worker_layers}[spec["kind"]]
    res = fn(spec)
    res["versions"] = bt.versions(spec.get("framework", "torch"))
    res["env_threads"] = {k: os.environ.get(k) for k in bt.THREAD_VARS}
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


# ======================================================================================
# parent side
# ======================================================================================

def run_job(spec: dict, threads: int) -> dict:
    env = dict(os.environ)
    for k in bt.THREAD_VARS:
        env[k] = str(threads)
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tf:
        path = tf.name
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
                               "--worker-out", path], env=env)
        if proc.returncode != 0:
            raise SystemExit(f"worker {spec['kind']} {spec.get('framework', '')} exited with {proc.returncode}")
        with open(path) as f:
            res = json.load(f)
        res["job_s"] = time.perf_counter() - t
        return res
    finally:
        os.unlink(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("NPVAE_DATA_DIR"), help="MNIST folder (default $NPVAE_DATA_DIR)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS / torch threads per process")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the epoch row (npvae, torch alternated)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per process")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed epochs")
    p.add_argument("--train-images", type=int, default=60_000, help="training images per epoch")
    p.add_argument("--hidden", type=int, nargs="+", default=[400], help="dense widths (0: none), as the demo's --hidden")
    p.add_argument("--z-dim", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer-reps", type=int, default=20, help="repetitions per layer timing")
    p.add_argument("--no-flag-row", action="store_true", help="skip the FAST_COL2IM on/off row")
    p.add_argument("--out", default=str(HERE / "results" / "conv.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def render(report: dict) -> str:
    m = report["meta"]
    L = [f"npvae ConvVAE vs PyTorch {m['versions'].get('torch', '?')}: commit {m['git']['commit'][:7]}"
         f"{' (+ uncommitted npvae changes)' if m['git']['npvae_uncommitted'] else ''}, "
         f"{m['cpu'].get('model_name', '?')}, {m['threads']} thread(s), {m['train_images']} images per epoch", ""]
    e = report["epoch"]
    L.append(f"{'epoch (s), batch 128, float32':<40}{'npvae':>10}{'PyTorch':>10}{'ratio':>8}")
    L.append(f"{'median over rounds':<40}{e['npvae']['median_s']:>10.2f}{e['torch']['median_s']:>10.2f}"
             f"{e['ratio']:>8.2f}")
    L.append(f"{'per-round medians':<40}{', '.join(f'{v:.2f}' for v in e['npvae']['rounds']):>10}  "
             f"{', '.join(f'{v:.2f}' for v in e['torch']['rounds'])}")
    L.append(f"{'peak RSS (MB)':<40}{e['npvae']['rss_mb']:>10.0f}{e['torch']['rss_mb']:>10.0f}")
    L.append(f"{'most other load during an epoch (CPUs)':<40}{bt.fmt(e['npvae']['other']):>10}"
             f"{bt.fmt(e['torch']['other']):>10}")
    if report.get("flag"):
        f = report["flag"]
        L.append(f"FAST_COL2IM on / off: {f['on_s']:.2f} / {f['off_s']:.2f} s per epoch, saves {100 * f['saving']:.1f} %")
    L.append("")
    L.append(f"{'layer fwd+bwd (ms), batch 128':<30}{'npvae':>8}{'torch':>8}{'ratio':>7}{'im2col':>8}{'col2im':>8}"
             f"{'mm+rest':>8}{'mm floor':>9}")
    for r in report["layers"]["layers"]:
        q = r["parts_ms"]
        L.append(f"{r['layer']:<30}{r['npvae_ms']:>8.2f}{r['torch_ms']:>8.2f}{r['ratio']:>7.2f}{q['im2col']:>8.2f}"
                 f"{q['col2im']:>8.2f}{q['matmul_and_rest']:>8.2f}{q['matmul_floor']:>9.2f}")
    return "\n".join(L)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker is not None:
        return worker_main(a.worker, a.worker_out)
    if not a.data_dir:
        raise SystemExit("--data-dir: expected the MNIST folder (or set NPVAE_DATA_DIR), got nothing")
    base = dict(data_dir=a.data_dir, threads=a.threads, hidden=a.hidden, z_dim=a.z_dim, seed=a.seed,
                train_images=a.train_images, epochs=a.epochs, warmup_steps=a.warmup_steps)
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": bt.cpu_info(), "threads": a.threads,
            "git": bt.git_info(), "platform": platform.platform(), "argv": sys.argv[1:],
            "train_images": a.train_images, "hidden": a.hidden, "data_prep": bt.DATA_PREP_NOTE}
    t0 = time.perf_counter()
    runs = {"npvae": [], "torch": []}
    flag = {True: [], False: []}
    for r in range(a.rounds):
        for fw in ("npvae", "torch"):
            bt.log(f"[round {r + 1}/{a.rounds}] epoch row: {fw}")
            res = run_job({**base, "kind": "epoch", "framework": fw}, a.threads)
            runs[fw].append(res)
            if fw == "npvae":
                flag[True].append(res)
        if not a.no_flag_row:
            bt.log(f"[round {r + 1}/{a.rounds}] epoch row: npvae with FAST_COL2IM = False")
            flag[False].append(run_job({**base, "kind": "epoch", "framework": "npvae", "fast_col2im": False},
                                       a.threads))
    bt.log("layer row")
    layers = run_job({**base, "kind": "layers", "framework": "torch", "layer_reps": a.layer_reps}, a.threads)
    meta["versions"] = {**runs["npvae"][0]["versions"], **layers["versions"]}
    meta["total_s"] = time.perf_counter() - t0

    def summary(results):
        walls = [e["wall_s"] for res in results for e in res["epochs"]]
        others = [e["other_cpus"] for res in results for e in res["epochs"] if e["other_cpus"] is not None]
        return {"median_s": bt.median(walls), "min_s": min(walls), "rounds": [res["median_s"] for res in results],
                "rss_mb": max(res["rss_peak_mb"] for res in results), "other": max(others) if others else None}
    epoch = {fw: summary(res) for fw, res in runs.items()}
    epoch["ratio"] = epoch["npvae"]["median_s"] / epoch["torch"]["median_s"]
    report = {"meta": meta, "settings": {k: v for k, v in vars(a).items() if not k.startswith("worker")},
              "epoch": epoch, "layers": layers, "raw": runs}
    if not a.no_flag_row:
        on, off = summary(flag[True])["median_s"], summary(flag[False])["median_s"]
        report["flag"] = {"on_s": on, "off_s": off, "saving": (off - on) / off,
                          "off_rounds": [res["median_s"] for res in flag[False]]}
    report["table"] = render(report)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(report["table"])
    print(f"\nwrote {out} ({meta['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
