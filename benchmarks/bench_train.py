#!/usr/bin/env python
"""Time npvae's training loop against PyTorch and JAX on the identical setup.

Main comparison: the 784-400-20 ReLU VAE of the PyTorch examples (fc1 784->400,
fc21/fc22 400->20, fc3 20->400, fc4 400->784) with a Bernoulli decoder, loss = per-example
mean -ELBO (BCE-with-logits summed over pixels + closed-form KL, averaged over the batch),
Adam(lr=1e-3), batch 128, float32, dynamically binarized MNIST training set (60,000
images = 469 steps per epoch, the last one with 96 images), one epoch = one pass.

All three frameworks get the same data pipeline *inside* the timed loop: per batch,
``npvae.data.minibatches`` gathers the uint8 images by a shuffled index and draws a fresh,
exact Bernoulli(pixel/255) binarization with NumPy, with the same seed, so every framework
sees the same batches; PyTorch receives that array through ``torch.from_numpy`` (no copy),
JAX as the argument of its jit-compiled step (one host-to-device copy, which on CPU is a
memcpy). All start from the same weights (the peers copy npvae's Glorot initialisation for
the same seed) and clip logvar to [-20, 10] as npvae does, so the work per step is the
same. PyTorch uses ``torch.optim.Adam``; JAX uses one ``jax.jit``-compiled step (loss,
``jax.value_and_grad``, ``optax.adam``, parameter update) with buffer donation, which XLA
fuses into a few loops. The Gaussian noise comes from each framework's own generator.

Each measurement runs in its own subprocess, with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS /
MKL_NUM_THREADS set before NumPy is imported, ``torch.set_num_threads`` set to the same
number, and for JAX ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=<threads > 1>
intra_op_parallelism_threads=<threads>``, so every framework uses the same thread count and
each reports its own peak RSS. The main comparison runs ``--rounds`` rounds, alternating
the frameworks (npvae, torch, jax, npvae, ...) in fresh subprocesses, and reports the median
and the minimum epoch of each over all rounds.

Secondary rows (each can be skipped; ``--quick`` skips them all): float64, the IWAE-paper
model (784-200-200-50 tanh, batch 100), both for all three frameworks, and
``VAE.log_likelihood`` with k = 1000 on 1,000 test images (plus a PyTorch equivalent; no
JAX version). For npvae's main configuration the script also
splits an epoch into data / forward / backward / optimizer, times the model's matmuls in
isolation (same shapes and call forms as npvae.layers.Linear) and cProfiles the step.

Usage::

    python benchmarks/bench_train.py                     # full run (~15 min on 2 cores)
    python benchmarks/bench_train.py --quick             # main comparison only
    python benchmarks/bench_train.py --frameworks npvae,jax --quick
    python benchmarks/bench_train.py --threads 1 --out /tmp/b.json

The machine should be otherwise idle: the "other load" column reports how many CPUs other
processes used during the timed epochs (from /proc/stat), and timings with a non-zero
value there are not trustworthy (multi-threaded BLAS degrades badly when a core is shared).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmark the working tree's npvae, not an installed copy
    sys.path.insert(0, str(REPO))

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
N_TRAIN = 60_000
ARCHS = {
    # name: (x_dim, hidden, z_dim, activation)
    "examples": (784, (400,), 20, "relu"),
    "iwae": (784, (200, 200), 50, "tanh"),
}
ARCH_LABEL = {"examples": "784-400-20 relu", "iwae": "784-200-200-50 tanh"}
FRAMEWORKS = ("npvae", "torch", "jax")
PEER_MODULES = {"torch": "torch", "jax": "optax"}  # what must be importable to time a peer
DATA_PREP_NOTE = ("INCLUDED identically in every timing: per batch, npvae.data.minibatches gathers the "
                  "uint8 images by a shuffled index (permutation drawn at epoch start) and draws a fresh, exact "
                  "Bernoulli(pixel/255) binarization with NumPy (same seed: same batches); PyTorch gets the "
                  "array via torch.from_numpy (no copy), JAX as its jitted step's argument")


# ======================================================================================
# small helpers (no NumPy here: the parent process never imports it)
# ======================================================================================

def maxrss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_busy_seconds() -> float | None:
    """CPU-seconds spent busy by all CPUs since boot (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest is already counted in user)
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


class Window:
    """Wall time, own CPU time and the CPUs used by *other* processes over a region."""

    def __enter__(self):
        self.w0, self.c0, self.b0 = time.perf_counter(), time.process_time(), cpu_busy_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0
        b1 = cpu_busy_seconds()
        self.other = None
        if self.b0 is not None and b1 is not None and self.wall > 0:
            self.other = max(0.0, (b1 - self.b0 - self.cpu) / self.wall)
        return False


def cpu_info() -> dict:
    info = {"logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    first = text.split("\n\n")[0]
    for line in first.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k in ("model name", "cpu family", "model", "cpu MHz", "cache size"):
            info[k.replace(" ", "_")] = v
        elif k == "flags":
            isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in v.split()]
            info["simd"] = " ".join(isa)
    return info


def git_info() -> dict:
    def run(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "HEAD").strip(),
            "npvae_uncommitted": [ln[3:] for ln in run("status", "--porcelain", "--", "npvae").splitlines()]}


def fmt(x, nd=2, width=None):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        s = "-"
    elif isinstance(x, float):
        s = f"{x:.{nd}f}"
    else:
        s = str(x)
    return s if width is None else s.rjust(width)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ======================================================================================
# worker side (runs in a subprocess whose thread variables were set before numpy loads)
# ======================================================================================

def blas_info() -> dict:
    """OpenBLAS core and thread count as NumPy's BLAS reports them (best effort, via ctypes)."""
    import ctypes
    import numpy as np  # noqa: F401  (loads the BLAS library)
    out = {}
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f
                           if "openblas" in ln.split()[-1].lower() and ".so" in ln.split()[-1]})
    except OSError:
        libs = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                f = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if f is not None and "threads" not in out:
                    f.restype = ctypes.c_int
                    out["threads"] = f()
                for what in ("config", "corename"):
                    g = getattr(lib, f"{prefix}get_{what}{suffix}", None)
                    if g is not None and what not in out:
                        g.restype = ctypes.c_char_p
                        out[what] = g().decode(errors="replace").strip()
        out["library"] = os.path.basename(path)
        break
    return out


def versions(framework: str | None) -> dict:
    import numpy as np
    import scipy
    v = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
         "blas": blas_info()}
    try:
        import npvae
        v["npvae"] = getattr(npvae, "__version__", "?")
    except ImportError:
        pass
    if framework == "torch":
        import torch
        v["torch"] = torch.__version__
        v["torch_threads"] = torch.get_num_threads()
        v["torch_interop_threads"] = torch.get_num_interop_threads()
    if framework == "jax":
        import jax
        import jaxlib
        import optax
        v.update(jax=jax.__version__, jaxlib=jaxlib.__version__, optax=optax.__version__,
                 jax_backend=jax.default_backend(), xla_flags=os.environ.get("XLA_FLAGS", ""))
    return v


def np_dtype(name):
    import numpy as np
    return {"float32": np.float32, "float64": np.float64}[name]


def build_npvae(arch: str, dtype: str, seed: int):
    import numpy as np
    from npvae import VAE  # the public name (stable across npvae's internal layout)
    x_dim, hidden, z_dim, act = ARCHS[arch]
    return VAE(x_dim, z_dim, hidden, act, "bernoulli", rng=np.random.default_rng(seed), dtype=np_dtype(dtype))


def npvae_weights(arch: str, dtype: str, seed: int) -> dict:
    """npvae's initial weights for ``seed`` in the peers' layout: ``{"enc": [(W, b), ...],
    "mu": (W, b), "logvar": (W, b), "dec": [(W, b), ...]}`` with W of shape (in, out)
    (npvae's encoder head, one Linear to 2 * z_dim, split into its mu and logvar halves)."""
    from npvae.layers import Linear
    ref = build_npvae(arch, dtype, seed)
    z_dim = ARCHS[arch][2]

    def linears(part):
        return [(layer.params["W"].copy(), layer.params["b"].copy()) for layer in part if isinstance(layer, Linear)]
    enc = linears(ref.encoder)
    W, b = enc.pop()
    return {"enc": enc, "mu": (W[:, :z_dim], b[:z_dim]), "logvar": (W[:, z_dim:], b[z_dim:]),
            "dec": linears(ref.decoder)}


def build_torch(arch: str, dtype: str, seed: int):
    """The PyTorch-examples VAE (fc1, fc21/fc22, fc3, fc4 for arch 'examples'), initialised
    with exactly npvae's initial weights for the same seed."""
    import numpy as np
    import torch
    from torch import nn

    x_dim, hidden, z_dim, act = ARCHS[arch]
    Act = {"relu": nn.ReLU, "tanh": nn.Tanh}[act]

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc, d = [], x_dim
            for h in hidden:
                enc += [nn.Linear(d, h), Act()]
                d = h
            self.enc = nn.Sequential(*enc)
            self.fc21 = nn.Linear(d, z_dim)   # mu
            self.fc22 = nn.Linear(d, z_dim)   # logvar
            dec, d = [], z_dim
            for h in reversed(hidden):
                dec += [nn.Linear(d, h), Act()]
                d = h
            dec.append(nn.Linear(d, x_dim))
            self.dec = nn.Sequential(*dec)

        def encode(self, x):
            h = self.enc(x)
            # npvae clips logvar to [-20, 10]; do the same so the work (and the function) match
            return self.fc21(h), torch.clamp(self.fc22(h), -20.0, 10.0)

        def decode(self, z):
            return self.dec(z)

        def loss(self, x):
            """Per-example mean -ELBO, exactly npvae's VAE.forward(...).loss with beta=1, L=1."""
            B = x.shape[0]
            mu, logvar = self.encode(x)
            std = torch.exp(0.5 * logvar)
            z = mu + torch.randn_like(std) * std
            logits = self.decode(z)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / B
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / B
            return bce + kld

    torch.manual_seed(seed)
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = TorchVAE().to(tdt)
    w = npvae_weights(arch, dtype, seed)
    t_lin = lambda seq: [m for m in seq if isinstance(m, nn.Linear)]  # noqa: E731
    with torch.no_grad():
        def put(tl, Wb):
            tl.weight.copy_(torch.from_numpy(np.ascontiguousarray(Wb[0].T)))
            tl.bias.copy_(torch.from_numpy(np.ascontiguousarray(Wb[1])))
        for tl, Wb in zip(t_lin(model.enc), w["enc"]):
            put(tl, Wb)
        put(model.fc21, w["mu"])
        put(model.fc22, w["logvar"])
        for tl, Wb in zip(t_lin(model.dec), w["dec"]):
            put(tl, Wb)
    return model


def build_jax(arch: str, dtype: str, seed: int, lr: float):
    """A jit-compiled training step of the same VAE in JAX with optax's Adam.

    Returns ``step(x) -> loss`` (a Python float; x a NumPy batch) and ``finish()`` which
    blocks until the last step's work is done. The parameters start as npvae's initial
    weights for ``seed``; the loss is the per-example mean -ELBO exactly as in
    ``TorchVAE.loss`` (Bernoulli log-likelihood from logits, closed-form KL, logvar clipped
    to [-20, 10]); ``step`` donates the parameter and optimizer buffers, so XLA updates them
    in place."""
    import jax
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[ARCHS[arch][3]]
    w = npvae_weights(arch, dtype, seed)
    params = jax.tree_util.tree_map(jnp.asarray, w)
    tx = optax.adam(lr)  # b1=0.9, b2=0.999, eps=1e-8: torch's and npvae's defaults

    def loss_fn(p, x, key):
        B = x.shape[0]
        h = x
        for W, b in p["enc"]:
            h = act(h @ W + b)
        mu = h @ p["mu"][0] + p["mu"][1]
        logvar = jnp.clip(h @ p["logvar"][0] + p["logvar"][1], -20.0, 10.0)
        z = mu + jax.random.normal(key, mu.shape, mu.dtype) * jnp.exp(0.5 * logvar)
        h = z
        for W, b in p["dec"][:-1]:
            h = act(h @ W + b)
        logits = h @ p["dec"][-1][0] + p["dec"][-1][1]
        # -log Bernoulli(x | sigmoid(l)) = softplus(l) - x l  (BCE with logits)
        bce = jnp.sum(jax.nn.softplus(logits) - x * logits) / B
        kld = -0.5 * jnp.sum(1 + logvar - mu ** 2 - jnp.exp(logvar)) / B
        return bce + kld

    @jax.jit
    def _step(p, opt_state, key, x):
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(p, x, sub)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, key, loss

    _step = jax.jit(_step.__wrapped__, donate_argnums=(0, 1))
    state = [params, tx.init(params), jax.random.key(seed)]

    def step(x):
        state[0], state[1], state[2], loss = _step(state[0], state[1], state[2], x)
        return float(loss)

    def finish():
        jax.block_until_ready(state[0])

    return step, finish


def load_train(data_dir):
    from npvae.data import load_mnist
    return load_mnist("train", data_dir=data_dir, download=False)[0]


def epoch_record(win, loss, n, steps):
    return {"wall_s": win.wall, "cpu_s": win.cpu, "other_cpus": win.other, "mean_loss": loss / n,
            "steps": steps}


def worker_train(spec: dict) -> dict:
    import numpy as np
    from npvae.data import minibatches

    fw, arch, dtype, B = spec["framework"], spec["arch"], spec["dtype"], spec["batch_size"]
    images = load_train(spec["data_dir"])[:spec.get("train_images", N_TRAIN)]
    rng = np.random.default_rng(spec["seed"] + 1)
    ndt = np_dtype(dtype)
    res = {}

    model = opt = None
    if fw == "npvae":
        from npvae.optim import Adam
        model = build_npvae(arch, dtype, spec["seed"])
        opt = Adam(model.params, lr=spec["lr"])

        def step(x):
            terms = model.forward(x, rng=rng)
            opt.step(model.backward())
            return terms.loss
        finish = None
    elif fw == "torch":
        import torch
        torch.set_num_threads(spec["threads"])
        model = build_torch(arch, dtype, spec["seed"])
        opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
        res["torch_adam_impl"] = ("fused" if opt.defaults.get("fused") else
                                  "foreach" if opt.defaults.get("foreach") else "default (single-tensor loop on CPU)")

        def step(x):
            opt.zero_grad(set_to_none=True)
            lt = model.loss(torch.from_numpy(x))
            lt.backward()
            opt.step()
            return lt.item()
        finish = None
    else:
        step, finish = build_jax(arch, dtype, spec["seed"], spec["lr"])

    def run_epoch():
        """One timed pass over the training set; every framework's step returns its loss as a
        Python float, which also waits for the step's work to finish."""
        loss, n, steps = 0.0, 0, 0
        with Window() as w:
            for x in minibatches(images, B, rng=rng, binarize="dynamic", dtype=ndt):
                loss += step(x) * len(x)
                n += len(x)
                steps += 1
            if finish is not None:
                finish()
        return epoch_record(w, loss, n, steps)

    res["rss_setup_mb"] = maxrss_mb()
    warm = []
    for i in range(spec["warmup"]):
        warm.append(run_epoch())
        log(f"    {fw} {arch} {dtype} warm-up epoch {i + 1}/{spec['warmup']}: {warm[-1]['wall_s']:.2f} s, "
            f"loss {warm[-1]['mean_loss']:.2f}, other load {fmt(warm[-1]['other_cpus'])} CPUs")
    timed, discarded = clean_runs(run_epoch, spec["epochs"], spec, f"{fw} {arch} {dtype} epoch")
    res["rss_peak_mb"] = maxrss_mb()  # before the (small) extra allocations of the breakdown
    walls = [r["wall_s"] for r in timed]
    res.update(warmup_epochs=warm, epochs=timed, discarded_epochs=discarded, median_s=median(walls),
               min_s=min(walls), max_s=max(walls), cpu_median_s=median([r["cpu_s"] for r in timed]),
               other_cpus=(None if any(r["other_cpus"] is None for r in timed)
                           else max(r["other_cpus"] for r in timed)),
               final_loss=timed[-1]["mean_loss"], steps_per_epoch=timed[-1]["steps"],
               samples_per_s=len(images) / median(walls))
    if spec.get("breakdown"):
        if fw == "npvae":
            fn = lambda: npvae_breakdown(model, opt, images, B, ndt, rng, spec)  # noqa: E731
        elif fw == "torch":
            fn = lambda: torch_breakdown(model, opt, images, B, ndt, rng)  # noqa: E731
        else:
            fn = lambda: phase_epoch(images, B, ndt, rng, [("step", step)])  # noqa: E731
        (res["breakdown"],), bad = clean_runs(fn, 1, spec, f"{fw} instrumented epoch")
        res["breakdown"]["discarded_runs"] = len(bad)
    return res


def clean_runs(fn, n: int, spec: dict, what: str):
    """Call ``fn`` until ``n`` of its records ran while other processes used at most
    ``spec['idle_threshold']`` CPUs, re-running a contaminated run at most ``spec['retries']``
    times in all (after waiting up to ``spec['wait_idle']`` s for the machine to be idle).
    Returns (kept records, discarded records); once the retries are used up, contaminated
    records are kept (and the table flags them through the 'other' column)."""
    kept, discarded = [], []
    retries = spec.get("retries", 0)
    while len(kept) < n:
        rec = fn()
        other = rec.get("other_cpus")
        bad = other is not None and other > spec.get("idle_threshold", math.inf)
        log(f"    {what} {len(kept) + 1}/{n}: {rec.get('wall_s', rec.get('epoch_wall_s', 0)):.2f} s"
            + (f", loss {rec['mean_loss']:.2f}" if "mean_loss" in rec else "")
            + f", other load {fmt(other)} CPUs" + (" -> discarded, re-running" if bad and retries > 0 else ""))
        if bad and retries > 0:
            retries -= 1
            discarded.append(rec)
            if spec.get("wait_idle", 0) > 0:
                wait_for_idle(spec["wait_idle"], spec["idle_threshold"])
            continue
        kept.append(rec)
    return kept, discarded


def _bench_call(fn, reps: int, blocks: int = 10) -> float:
    """Seconds per call: the fastest of ``blocks`` blocks' mean time over ``reps // blocks`` calls
    (the minimum filters out blocks slowed down by other processes)."""
    per = max(1, reps // blocks)
    for _ in range(3):
        fn()
    means = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(per):
            fn()
        means.append((time.perf_counter() - t) / per)
    return min(means)


def npvae_breakdown(model, opt, images, B, ndt, rng, spec) -> dict:
    """One instrumented epoch (data / forward / backward / optimizer / in-situ Linear layers)
    plus every matmul of the step timed in isolation with the same shapes and call forms."""
    import numpy as np
    from npvae import layers as L

    lin = {"forward": 0.0, "backward": 0.0}
    orig_f, orig_b = L.Linear._forward, L.Linear._backward

    def timed_forward(self, x):
        t = time.perf_counter()
        y = orig_f(self, x)
        lin["forward"] += time.perf_counter() - t
        return y

    def timed_backward(self, dy):
        t = time.perf_counter()
        dx = orig_b(self, dy)
        lin["backward"] += time.perf_counter() - t
        return dx

    L.Linear._forward, L.Linear._backward = timed_forward, timed_backward
    try:
        rec = phase_epoch(images, B, ndt, rng, [("forward", lambda x: model.forward(x, rng=rng)),
                                                ("backward", lambda _: model.backward()),
                                                ("optimizer", opt.step)])
    finally:
        L.Linear._forward, L.Linear._backward = orig_f, orig_b
    ph, batch_sizes = rec["phases_s"], rec.pop("batch_sizes")

    # ---- matmuls in isolation: x@W (forward), x.T@dy into grads (dW), dy@W.T (dx) -------
    counts = {b: batch_sizes.count(b) for b in sorted(set(batch_sizes))}
    L_samples = 1
    mrng = np.random.default_rng(0)
    layers = [(f"{part}.{i}", layer) for part, seq in (("encoder", model.encoder), ("decoder", model.decoder))
              for i, layer in enumerate(seq) if isinstance(layer, L.Linear)]
    mm = []
    total = {"forward x@W": 0.0, "backward x.T@dy (dW)": 0.0, "backward dy@W.T (dx)": 0.0}
    for name, layer in layers:
        W = layer.params["W"].copy()
        gW = np.empty_like(W)
        row = {"layer": name, "shape": f"{layer.in_features}x{layer.out_features}",
               "skip_dx": bool(layer.skip_input_grad)}
        for key in total:
            row[key] = 0.0
        for b, count in counts.items():
            rows = b * L_samples
            x = mrng.standard_normal((rows, layer.in_features)).astype(ndt)
            dy = mrng.standard_normal((rows, layer.out_features)).astype(ndt)
            reps = spec["matmul_reps"]
            t_f = _bench_call(lambda: x @ W, reps)
            t_w = _bench_call(lambda: np.matmul(x.T, dy, out=gW), reps)
            t_x = 0.0 if layer.skip_input_grad else _bench_call(lambda: dy @ W.T, reps)
            for key, tt in zip(total, (t_f, t_w, t_x)):
                row[key] += tt * count
                total[key] += tt * count
            if b == max(counts, key=counts.get):
                row["us_per_call"] = {"forward": t_f * 1e6, "dW": t_w * 1e6, "dx": t_x * 1e6 if t_x else None}
        mm.append(row)
    matmul = sum(total.values())
    fb = ph["forward"] + ph["backward"]
    return {
        **rec, "batch_counts": counts,
        "forward_backward_s": fb,
        "linear_in_situ_s": lin, "linear_in_situ_total_s": lin["forward"] + lin["backward"],
        "matmul_isolated_s": total, "matmul_isolated_total_s": matmul,
        "elementwise_rest_s": fb - matmul,
        "non_linear_in_situ_s": fb - (lin["forward"] + lin["backward"]),
        "matmul_by_layer": mm,
        "method": ("phases timed with perf_counter around data/forward/backward/opt.step inside one extra "
                   "epoch; matmuls timed in isolation (fastest of 10 blocks) with the step's shapes and npvae's "
                   "call forms, multiplied by the number of batches of each size; elementwise_rest = "
                   "forward+backward - isolated matmuls (activations, likelihood, KL, reparameterisation, "
                   "bias add/sum, input checks, Python overhead); linear_in_situ = time inside Linear._forward/"
                   "_backward (matmuls + bias add/sum + dtype/shape checks)"),
    }


def phase_epoch(images, B, ndt, rng, phases) -> dict:
    """One instrumented epoch: per batch, ``phases`` = [(name, fn), ...] run in order, each
    ``fn`` called with the previous one's result (the first with the batch ``x``), and timed
    with perf_counter; "data" is the time spent in the batch iterator. The last phase must
    not return before its work is done (the steps here return Python floats or None)."""
    from npvae.data import minibatches
    ph = {"data": 0.0, **{name: 0.0 for name, _ in phases}}
    batch_sizes = []
    with Window() as w:
        t = time.perf_counter()
        for x in minibatches(images, B, rng=rng, binarize="dynamic", dtype=ndt):
            t1 = time.perf_counter()
            ph["data"] += t1 - t
            out = x
            for name, fn in phases:
                out = fn(out)
                t2 = time.perf_counter()
                ph[name] += t2 - t1
                t1 = t2
            t = time.perf_counter()
            batch_sizes.append(len(x))
        ph["data"] += time.perf_counter() - t  # the final StopIteration
    return {"epoch_wall_s": w.wall, "epoch_cpu_s": w.cpu, "other_cpus": w.other, "phases_s": ph,
            "loop_overhead_s": w.wall - sum(ph.values()), "batch_sizes": batch_sizes}


def torch_breakdown(model, opt, images, B, ndt, rng) -> dict:
    import torch

    def forward(x):
        opt.zero_grad(set_to_none=True)
        return model.loss(torch.from_numpy(x))

    rec = phase_epoch(images, B, ndt, rng, [("forward", forward), ("backward", lambda lt: lt.backward()),
                                            ("optimizer", lambda _: opt.step())])
    rec.pop("batch_sizes")
    return rec


def worker_profile(spec: dict) -> dict:
    """cProfile npvae's default training step over ``profile_steps`` steps."""
    import cProfile
    import pstats
    import numpy as np
    from npvae.data import minibatches
    from npvae.optim import Adam

    images = load_train(spec["data_dir"])
    rng = np.random.default_rng(spec["seed"] + 1)
    model = build_npvae("examples", "float32", spec["seed"])
    opt = Adam(model.params, lr=spec["lr"])
    n = spec["profile_steps"]

    def steps(k):
        it = minibatches(images, spec["batch_size"], rng=rng, binarize="dynamic", dtype=np.float32)
        for _, x in zip(range(k), it):
            model.forward(x, rng=rng)
            opt.step(model.backward())

    steps(30)  # warm-up
    with Window() as w:
        steps(n)
    plain = w.wall
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    steps(n)
    prof.disable()
    profiled = time.perf_counter() - t
    st = pstats.Stats(prof)

    def label(key):
        file, line, func = key
        if file == "~":
            return func
        p = Path(file)
        try:
            file = str(p.resolve().relative_to(REPO))
        except ValueError:
            parts = p.parts
            file = "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else p.name
        return f"{file}:{line}({func})"

    rows = []
    for key, (cc, nc, tt, ct, _callers) in st.stats.items():
        rows.append({"function": label(key), "ncalls": nc, "tottime_s": tt, "cumtime_s": ct,
                     "tottime_ms_per_step": 1e3 * tt / n, "cumtime_ms_per_step": 1e3 * ct / n})
    top = spec["profile_top"]
    return {"steps": n, "plain_s": plain, "other_cpus_unprofiled": w.other, "plain_ms_per_step": 1e3 * plain / n, "profiled_s": profiled,
            "by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:top],
            "by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:top],
            "rss_peak_mb": maxrss_mb()}


def worker_loglik(spec: dict) -> dict:
    """log p(x) by importance sampling with k samples on the first n test images."""
    import numpy as np
    from npvae.data import load_mnist, to_float

    test = load_mnist("test", data_dir=spec["data_dir"], download=False)[0][:spec["ll_images"]]
    grey = to_float(test, np.float32)
    x = (np.random.default_rng(spec["seed"] + 7).random(grey.shape, dtype=np.float32) < grey).astype(np.float32)
    k, bs = spec["ll_k"], spec["ll_batch_size"]
    res = {}
    if spec["framework"] == "npvae":
        model = build_npvae("examples", "float32", spec["seed"])
        rng = np.random.default_rng(spec["seed"] + 2)

        def run(xx):
            return model.log_likelihood(xx, k, rng=rng, batch_size=bs)
    else:
        import torch
        torch.set_num_threads(spec["threads"])
        model = build_torch("examples", "float32", spec["seed"])
        x_dim, hidden, z_dim, _ = ARCHS["examples"]
        # the same chunking as npvae's iwae_bound default: about 2**22 decoder outputs per chunk
        chunk = max(1, (1 << 22) // (bs * max(x_dim, max(hidden))))
        log2pi = math.log(2 * math.pi)
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        @torch.no_grad()
        def run(xx):
            xt = torch.from_numpy(xx)
            out = []
            for i in range(0, len(xt), bs):
                xb = xt[i:i + bs]
                b = len(xb)
                mu, logvar = model.encode(xb)
                logw = torch.empty(k, b, dtype=torch.float64)
                for s in range(0, k, chunk):
                    c = min(chunk, k - s)
                    e = torch.randn(c, b, z_dim)
                    z = mu + torch.exp(0.5 * logvar) * e
                    logits = model.decode(z.reshape(c * b, z_dim)).reshape(c, b, x_dim)
                    log_px = -bce(logits, xb.expand(c, b, x_dim), reduction="none").sum(-1).double()
                    log_pz = -0.5 * (log2pi + z.double() ** 2).sum(-1)
                    log_qz = -0.5 * (log2pi + logvar.double() + e.double() ** 2).sum(-1)
                    logw[s:s + c] = log_px + log_pz - log_qz
                out.append(torch.logsumexp(logw, 0) - math.log(k))
            return torch.cat(out).numpy()

    res["rss_setup_mb"] = maxrss_mb()
    with Window() as w0:
        run(x[:bs])  # warm-up on one batch
    log(f"    {spec['framework']} log_likelihood warm-up ({bs} images): {w0.wall:.2f} s")

    def timed_pass():
        with Window() as w:
            ll = run(x)
        return {"wall_s": w.wall, "cpu_s": w.cpu, "other_cpus": w.other, "ll": ll}

    (rec,), bad = clean_runs(timed_pass, 1, spec, f"{spec['framework']} log_likelihood k={k} on {len(x)} images")
    ll = rec.pop("ll")
    for b in bad:
        b.pop("ll")
    w = argparse.Namespace(wall=rec["wall_s"], cpu=rec["cpu_s"], other=rec["other_cpus"])
    res["discarded_runs"] = bad
    log(f"    mean log-likelihood estimate {float(np.mean(ll)):.2f} nats")
    res.update(median_s=w.wall, min_s=w.wall, max_s=w.wall, cpu_median_s=w.cpu, other_cpus=w.other,
               warmup_s=w0.wall, images=len(x), k=k, batch_size=bs, samples_per_s=len(x) / w.wall,
               mean_log_likelihood=float(np.mean(ll)), rss_peak_mb=maxrss_mb(),
               note="untrained model (the seed's initial weights, identical in both frameworks); one fixed "
                    "binarization of the test images; one timed pass after a one-batch warm-up; npvae's default "
                    "chunking (53 samples x 100 images per decoder call), the same in the PyTorch version")
    return res


def worker_main(spec_json: str, out_path: str) -> int:
    spec = json.loads(spec_json)
    env = {k: os.environ.get(k) for k in THREAD_VARS}
    fn = {"train": worker_train, "profile": worker_profile, "loglik": worker_loglik}[spec["kind"]]
    res = fn(spec)
    res["env_threads"] = env
    res["versions"] = versions(spec.get("framework"))
    res["rss_peak_mb_end"] = maxrss_mb()
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


# ======================================================================================
# parent side
# ======================================================================================

def run_job(spec: dict, threads: int) -> dict:
    env = dict(os.environ)
    for k in THREAD_VARS:
        env[k] = str(threads)
    if spec.get("framework") == "jax":
        env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                            f"intra_op_parallelism_threads={threads}")
        env.setdefault("JAX_PLATFORMS", "cpu")
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tf:
        path = tf.name
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
                               "--worker-out", path], env=env)
        elapsed = time.perf_counter() - t
        if proc.returncode != 0:
            return {"error": f"worker exited with status {proc.returncode}", "job_s": elapsed}
        with open(path) as f:
            res = json.load(f)
        res["job_s"] = elapsed
        return res
    finally:
        os.unlink(path)


def other_load(seconds: float = 2.0) -> float | None:
    """CPUs used by other processes over the next ``seconds`` (this process sleeps meanwhile)."""
    with Window() as w:
        time.sleep(seconds)
    return w.other


def wait_for_idle(budget: float, threshold: float) -> tuple[float, float | None]:
    """Sleep until other processes use < ``threshold`` CPUs (sampled over 2 s), or ``budget`` s pass.
    Returns (seconds waited, last load seen)."""
    t0 = time.perf_counter()
    while True:
        load = other_load()
        waited = time.perf_counter() - t0
        if load is None or load < threshold or waited >= budget:
            return waited, load
        log(f"    waiting for an idle machine: other processes use {load:.2f} CPUs ({waited:.0f}/{budget:.0f} s)")
        time.sleep(min(8.0, max(0.0, budget - waited)))


def merge_rounds(results: list[dict]) -> dict:
    """Pool the timed epochs of several rounds (subprocesses) of the same training row."""
    ok = [r for r in results if "epochs" in r]
    if not ok:
        return results[-1]
    epochs = [e for r in ok for e in r["epochs"]]
    walls = [e["wall_s"] for e in epochs]
    others = [e["other_cpus"] for e in epochs]
    return {
        "epochs": epochs, "discarded_epochs": [e for r in ok for e in r.get("discarded_epochs", [])],
        "warmup_epochs": [e for r in ok for e in r.get("warmup_epochs", [])],
        "median_s": median(walls), "min_s": min(walls), "max_s": max(walls),
        "cpu_median_s": median([e["cpu_s"] for e in epochs]),
        "other_cpus": None if any(o is None for o in others) else max(others),
        "final_loss": ok[-1]["final_loss"], "steps_per_epoch": ok[-1]["steps_per_epoch"],
        "samples_per_s": ok[-1]["samples_per_s"] * ok[-1]["median_s"] / median(walls),
        "rss_setup_mb": max(r["rss_setup_mb"] for r in ok), "rss_peak_mb": max(r["rss_peak_mb"] for r in ok),
        "round_medians_s": [r["median_s"] for r in ok],
        "torch_adam_impl": ok[-1].get("torch_adam_impl"),
    }


def available(framework: str) -> bool:
    """npvae always; a peer when its package (torch; optax, which needs jax) is importable."""
    import importlib.util
    return framework == "npvae" or importlib.util.find_spec(PEER_MODULES[framework]) is not None


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.replace("::", ":"),
        formatter_class=type("Fmt", (argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter),
                             {}))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_train.json"),
                   help="JSON file to write (its folder is created)")
    p.add_argument("--data-dir", default=os.environ.get("NPVAE_DATA_DIR"),
                   help="folder with the MNIST IDX files (default: $NPVAE_DATA_DIR, else npvae's default folder); "
                        "nothing is downloaded")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for both frameworks: OMP/OPENBLAS/MKL_NUM_THREADS for NumPy, "
                        "torch.set_num_threads for PyTorch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs of the main comparison (median/min/max)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up epochs before the main comparison")
    p.add_argument("--rounds", type=int, default=3,
                   help="run the main comparison this many times, alternating the frameworks (npvae, torch, jax, "
                        "npvae, ...) in fresh subprocesses, and pool the timed epochs (median and minimum over "
                        "all rounds); this evens out slow phases of a shared or virtualised machine")
    p.add_argument("--secondary-epochs", type=int, default=2, help="timed epochs of the float64 and IWAE rows")
    p.add_argument("--secondary-warmup", type=int, default=1, help="warm-up epochs of the float64 and IWAE rows")
    p.add_argument("--train-images", type=int, default=N_TRAIN,
                   help="use only the first N training images per epoch (a smoke test; the table's times are then "
                        "not per full epoch)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the main and float64 rows")
    p.add_argument("--iwae-batch-size", type=int, default=100, help="batch size of the IWAE-model row")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (both frameworks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (shared) and of the data stream")
    p.add_argument("--quick", action="store_true",
                   help="only the main comparison (with the breakdown): implies --skip-float64 --skip-iwae "
                        "--skip-loglik --profile-steps 0")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated frameworks to time, in this order within each round (peers that are "
                        "not importable are skipped with a message)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out (same as omitting it from --frameworks)")
    p.add_argument("--skip-float64", action="store_true", help="skip the float64 rows")
    p.add_argument("--skip-iwae", action="store_true", help="skip the IWAE-paper model rows (784-200-200-50 tanh)")
    p.add_argument("--skip-loglik", action="store_true", help="skip the log_likelihood rows")
    p.add_argument("--no-breakdown", action="store_true",
                   help="skip the instrumented epoch and isolated matmul timings (npvae and PyTorch)")
    p.add_argument("--matmul-reps", type=int, default=100,
                   help="calls per matmul shape when timing the matmuls in isolation")
    p.add_argument("--profile-steps", type=int, default=200,
                   help="npvae training steps to run under cProfile (0: no profile)")
    p.add_argument("--profile-top", type=int, default=25, help="functions listed per profile ranking")
    p.add_argument("--ll-k", type=int, default=1000, help="importance samples per image for log_likelihood")
    p.add_argument("--ll-images", type=int, default=1000, help="test images for log_likelihood")
    p.add_argument("--ll-batch-size", type=int, default=100, help="images per log_likelihood batch")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each measurement, wait up to SECONDS until other processes use less than "
                        "--idle-threshold CPUs (0: do not wait)")
    p.add_argument("--idle-threshold", type=float, default=0.2, metavar="CPUS",
                   help="CPUs other processes may use for the machine to count as idle (see --wait-idle)")
    p.add_argument("--retries", type=int, default=3,
                   help="per measurement, how many timed epochs (or passes) run while other processes used more "
                        "than --idle-threshold CPUs may be discarded and re-run (0: keep every epoch)")
    p.add_argument("--worker", metavar="SPEC", help="internal: run one measurement described by a JSON spec")
    p.add_argument("--worker-out", metavar="PATH", help="internal: where the worker writes its JSON result")
    a = p.parse_args(argv)
    if a.quick:
        a.skip_float64 = a.skip_iwae = a.skip_loglik = True
        a.profile_steps = 0
    a.frameworks = [f.strip() for f in a.frameworks.split(",") if f.strip()]
    bad = [f for f in a.frameworks if f not in FRAMEWORKS]
    if bad or "npvae" not in a.frameworks or len(set(a.frameworks)) != len(a.frameworks):
        p.error(f"--frameworks: expected distinct names from {', '.join(FRAMEWORKS)} including npvae, "
                f"got {','.join(a.frameworks)}")
    if a.no_torch and "torch" in a.frameworks:
        a.frameworks.remove("torch")
    for name in ("threads", "epochs", "rounds", "train_images", "secondary_epochs", "batch_size", "iwae_batch_size", "matmul_reps",
                 "ll_k", "ll_images", "ll_batch_size", "profile_top"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("warmup", "secondary_warmup", "profile_steps", "retries"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    return a


def plan(a, fws: list[str]) -> list[tuple[str, dict]]:
    base = {"data_dir": a.data_dir, "seed": a.seed, "lr": a.lr, "threads": a.threads, "train_images": a.train_images,
            "matmul_reps": a.matmul_reps, "retries": a.retries, "wait_idle": a.wait_idle,
            "idle_threshold": a.idle_threshold}
    jobs = []

    def train(row, fw, arch, dtype, bs, warmup, epochs, breakdown=False):
        jobs.append((row, {**base, "kind": "train", "framework": fw, "arch": arch, "dtype": dtype,
                           "batch_size": bs, "warmup": warmup, "epochs": epochs, "breakdown": breakdown}))

    for rnd in range(a.rounds):  # rounds alternate the frameworks: npvae, torch, npvae, torch, ...
        for fw in fws:
            train("main", fw, "examples", "float32", a.batch_size, a.warmup, a.epochs,
                  breakdown=rnd == 0 and not a.no_breakdown)
    if not a.skip_float64:
        for fw in fws:
            train("float64", fw, "examples", "float64", a.batch_size, a.secondary_warmup, a.secondary_epochs)
    if not a.skip_iwae:
        for fw in fws:
            train("iwae", fw, "iwae", "float32", a.iwae_batch_size, a.secondary_warmup, a.secondary_epochs)
    if not a.skip_loglik:
        for fw in (f for f in fws if f != "jax"):  # no JAX log-likelihood estimator here
            jobs.append(("loglik", {**base, "kind": "loglik", "framework": fw, "ll_k": a.ll_k,
                                    "ll_images": a.ll_images, "ll_batch_size": a.ll_batch_size}))
    if a.profile_steps > 0:
        jobs.append(("profile", {**base, "kind": "profile", "framework": "npvae", "batch_size": a.batch_size,
                                 "profile_steps": a.profile_steps, "profile_top": a.profile_top}))
    return jobs


ROW_LABEL = {
    "main": "{arch} B={bs} float32 (main)",
    "float64": "{arch} B={bs} float64",
    "iwae": "{arch} B={bs} float32",
}


def render(report: dict) -> str:
    m = report["meta"]
    L = []
    cpu = m["cpu"]
    L.append("npvae vs PyTorch vs JAX: VAE training benchmark")
    L.append(f"date        : {m['date']}   npvae commit {m['git']['commit'][:10] or '?'}"
             + (f" (+ uncommitted changes in {', '.join(m['git']['npvae_uncommitted'])})"
                if m["git"]["npvae_uncommitted"] else ""))
    L.append(f"CPU         : {cpu.get('model_name', '?')} (family {cpu.get('cpu_family', '?')}, model "
             f"{cpu.get('model', '?')}, {cpu.get('cpu_MHz', '?')} MHz, {cpu.get('simd', '')}), "
             f"{cpu['logical_cpus']} logical CPUs")
    v = m["versions"]
    blas = v.get("blas", {})
    env = ", ".join(f"{k}={m['threads']}" for k in THREAD_VARS[:3])
    L.append(f"threads     : {m['threads']} for all (env {env};"
             f" OpenBLAS reports {blas.get('threads', '?')}; torch.get_num_threads() = {v.get('torch_threads', '-')})")
    L.append(f"versions    : Python {v['python']}, numpy {v['numpy']} ({blas.get('config', 'BLAS ?')}; core "
             f"{blas.get('corename', '?')}), scipy {v['scipy']}, torch {v.get('torch', 'not run')}, jax "
             f"{v.get('jax', 'not run')} (jaxlib {v.get('jaxlib', '-')}, optax {v.get('optax', '-')}, "
             f"XLA_FLAGS '{v.get('xla_flags', '')}')")
    L.append(f"setup       : Bernoulli VAE, per-example mean -ELBO, Adam lr {m['lr']}, dynamic binarization, "
             f"{m.get('train_images', N_TRAIN)} training images per epoch (last batch partial), same initial weights and "
             f"batches in all")
    L.append(f"data prep   : {DATA_PREP_NOTE}")
    L.append(f"load average: {m['loadavg_start']} at start, {m['loadavg_end']} at end")
    L.append("")
    hdr = (f"{'row':<38}{'framework':<10}{'steps':>6}{'ep':>4}{'disc':>5}{'median s':>10}{'min s':>8}{'max s':>8}"
           f"{'samples/s':>11}{'cpu s':>8}{'loss':>8}{'peakRSS MB':>11}{'other':>7}")
    L.append(hdr)
    L.append("-" * len(hdr))
    for r in report["rows"]:
        res = r["result"]
        if "error" in res or "skipped" in res:
            L.append(f"{r['label']:<38}{r['framework']:<10}  {res.get('error') or res.get('skipped')}")
            continue
        if r["row"] == "loglik":
            steps, ep, loss = f"{res['images']}im", 1, res["mean_log_likelihood"]
            sps = res["images"] * res["k"] / res["median_s"]
        else:
            steps, ep, loss, sps = res["steps_per_epoch"], len(res["epochs"]), res["final_loss"], res["samples_per_s"]
        disc = len(res.get("discarded_epochs", res.get("discarded_runs", [])))
        L.append(f"{r['label']:<38}{r['framework']:<10}{fmt(steps, width=6)}{fmt(ep, width=4)}{fmt(disc, width=5)}"
                 f"{fmt(res['median_s'], 2, 10)}{fmt(res['min_s'], 2, 8)}{fmt(res['max_s'], 2, 8)}"
                 f"{fmt(float(sps), 0, 11)}{fmt(res['cpu_median_s'], 1, 8)}{fmt(loss, 2, 8)}"
                 f"{fmt(res['rss_peak_mb'], 0, 11)}{fmt(res['other_cpus'], 2, 7)}")
    L.append("")
    L.append("columns: ep = timed epochs kept; disc = timed epochs discarded and re-run because other processes "
             "used > --idle-threshold CPUs meanwhile; median/min/max = wall seconds per epoch over the kept epochs "
             "(loglik: one timed pass); "
             "samples/s = training images/s (loglik: decoder samples/s = images*k/s); cpu s = process CPU "
             "seconds per epoch (all threads); loss = mean training -ELBO of the last timed epoch (loglik: mean "
             "log p(x) estimate, untrained model); peakRSS = ru_maxrss of that framework's subprocess; other = "
             "CPUs used by other processes during the timed epochs (should be ~0)")
    others = [r["result"].get("other_cpus") for r in report["rows"]]
    worst = max((o for o in others if o is not None), default=None)
    if worst is not None and worst > 0.2:
        L.append(f"WARNING: other processes used up to {worst:.2f} CPUs during some timings (column 'other'): "
                 f"those rows are slowed down and not comparable; rerun on an idle machine (see --wait-idle)")
    names = {"torch": "PyTorch", "jax": "JAX"}
    for peer, by_row in report["ratios"].items():
        L.append("")
        L.append(f"ratio npvae / {names[peer]} (median wall time): " + ", ".join(
            f"{k} {v:.2f}x" for k, v in by_row.items()) + "   (> 1: npvae slower)")
        L.append(f"ratio npvae / {names[peer]} (fastest epoch)   : " + ", ".join(
            f"{k} {v:.2f}x" for k, v in report["ratios_by_min"][peer].items()))
    for r in report["rows"]:
        if len(r.get("rounds", [])) > 1:
            L.append(f"main rounds, {r['framework']}: per-round median s/epoch "
                     + ", ".join(f"{m:.2f}" for m in r["result"].get("round_medians_s", [])))
    b = report.get("breakdown", {}).get("npvae")
    if b:
        ep = b["epoch_wall_s"]
        L.append("")
        L.append(f"npvae step breakdown (main config, one instrumented epoch: {ep:.2f} s wall, "
                 f"{b['epoch_cpu_s']:.2f} s CPU, other load {fmt(b['other_cpus'])} CPUs)")
        L.append(f"  {'component':<58}{'s/epoch':>9}{'% epoch':>9}{'ms/step':>9}")
        nsteps = sum(b["batch_counts"].values())

        def line(name, s):
            L.append(f"  {name:<58}{s:>9.3f}{100 * s / ep:>8.1f}%{1e3 * s / nsteps:>9.3f}")
        ph = b["phases_s"]
        line("data prep (gather + exact Bernoulli draw, numpy)", ph["data"])
        line("model forward + backward", b["forward_backward_s"])
        line("  forward", ph["forward"])
        line("  backward", ph["backward"])
        line("  matmuls, timed in isolation (same shapes), total", b["matmul_isolated_total_s"])
        for k, s in b["matmul_isolated_s"].items():
            line(f"    {k}", s)
        line("  elementwise + reductions + checks + Python (= f+b - matmuls)", b["elementwise_rest_s"])
        line("  [cross-check] inside Linear._forward/_backward, in situ", b["linear_in_situ_total_s"])
        line("  [cross-check] outside Linear layers, in situ", b["non_linear_in_situ_s"])
        line("optimizer (Adam.step)", ph["optimizer"])
        line("loop overhead (rest of the epoch)", b["loop_overhead_s"])
        L.append("  matmuls per layer (us per call at the full batch size: forward / dW / dx):")
        for r in b["matmul_by_layer"]:
            u = r.get("us_per_call", {})
            L.append(f"    {r['layer']:<10} {r['shape']:>8}: {fmt(u.get('forward'), 1)} / {fmt(u.get('dW'), 1)} / "
                     f"{'skipped (data needs no gradient)' if r['skip_dx'] else fmt(u.get('dx'), 1)}")
    tb = report.get("breakdown", {}).get("torch")
    if tb:
        ep = tb["epoch_wall_s"]
        L.append("")
        L.append(f"PyTorch step breakdown (main config, one instrumented epoch: {ep:.2f} s wall, other load "
                 f"{fmt(tb['other_cpus'])} CPUs)")
        for k, name in (("data", "data prep (same numpy code) + from_numpy"), ("forward", "forward + loss"),
                        ("backward", "backward (autograd)"), ("optimizer", "zero_grad + Adam.step")):
            s = tb["phases_s"][k]
            L.append(f"  {name:<58}{s:>9.3f}{100 * s / ep:>8.1f}%")
    jb = report.get("breakdown", {}).get("jax")
    if jb:
        ep = jb["epoch_wall_s"]
        L.append("")
        L.append(f"JAX step breakdown (main config, one instrumented epoch: {ep:.2f} s wall, other load "
                 f"{fmt(jb['other_cpus'])} CPUs)")
        for k, name in (("data", "data prep (same numpy code)"),
                        ("step", "jitted step (copy in, forward, grad, optax Adam, loss out)")):
            s = jb["phases_s"][k]
            L.append(f"  {name:<58}{s:>9.3f}{100 * s / ep:>8.1f}%")
    prof = report.get("profile")
    if prof and "by_tottime" in prof:
        L.append("")
        L.append(f"cProfile of npvae's default step ({prof['steps']} steps; {prof['plain_ms_per_step']:.2f} ms/step "
                 f"unprofiled, {1e3 * prof['profiled_s'] / prof['steps']:.2f} ms/step profiled; other load "
                 f"{fmt(prof.get('other_cpus_unprofiled'))} CPUs; own time includes the ufuncs and matmul "
                 f"operators a function calls)")
        for key, title in (("by_tottime", "own time"), ("by_cumtime", "cumulative time")):
            L.append(f"  top by {title}:  {'ms/step own':>12}{'ms/step cum':>12}{'calls/step':>11}  function")
            for r in prof[key]:
                L.append(f"  {'':<17}{r['tottime_ms_per_step']:>12.3f}{r['cumtime_ms_per_step']:>12.3f}"
                         f"{r['ncalls'] / prof['steps']:>11.1f}  {r['function']}")
    return "\n".join(L)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker is not None:
        if not a.worker_out:
            raise SystemExit("--worker needs --worker-out")
        return worker_main(a.worker, a.worker_out)

    fws = [f for f in a.frameworks if available(f)]
    for f in a.frameworks:
        if f not in fws:
            log(f"{f} is not importable: leaving it out (pip install -e '.[bench]' installs the pinned peers)")
    jobs = plan(a, fws)
    loadavg = lambda: open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []  # noqa
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_info(), "threads": a.threads,
            "lr": a.lr, "git": git_info(), "platform": platform.platform(), "argv": sys.argv[1:],
            "data_prep": DATA_PREP_NOTE, "loadavg_start": " ".join(loadavg()), "train_images": a.train_images}
    log(f"{len(jobs)} jobs, {a.threads} thread(s) each; load average {meta['loadavg_start']}")
    rows, breakdown, profile, vers = [], {}, None, {}
    t_all = time.perf_counter()
    for i, (row, spec) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {row}: {spec['framework']} {spec.get('arch', '')} {spec.get('dtype', '')}")
        waited, load = wait_for_idle(a.wait_idle, a.idle_threshold) if a.wait_idle > 0 else (0.0, None)
        res = run_job(spec, a.threads)
        res["waited_for_idle_s"], res["other_cpus_before"] = waited, load
        log(f"    done in {res.get('job_s', 0):.1f} s")
        if "versions" in res:
            vers.update({k: v for k, v in res["versions"].items()
                         if k not in vers or k.startswith(("torch", "jax", "optax", "xla"))})
        if row == "profile":
            profile = res
            continue
        if "breakdown" in res:
            breakdown[spec["framework"]] = res.pop("breakdown")
        if row == "loglik":
            label = f"log_likelihood k={a.ll_k}, {a.ll_images} test im"
        else:
            arch = spec["arch"]
            label = ROW_LABEL[row].format(arch=ARCH_LABEL[arch], bs=spec["batch_size"])
        same = [r for r in rows if r["row"] == row and r["framework"] == spec["framework"]]
        if same:  # another round of the same row: pool its epochs
            same[0]["rounds"].append(res)
            same[0]["result"] = merge_rounds(same[0]["rounds"])
        else:
            rows.append({"row": row, "label": label, "framework": spec["framework"], "spec": spec, "result": res,
                         "rounds": [res]})
    meta["versions"] = vers
    meta["loadavg_end"] = " ".join(loadavg())
    meta["total_s"] = time.perf_counter() - t_all
    ratios, ratios_min = {}, {}  # {peer: {row: npvae time / peer time}}
    for peer in (f for f in fws if f != "npvae"):
        for row in ("main", "float64", "iwae", "loglik"):
            r = {x["framework"]: x["result"] for x in rows if x["row"] == row}
            if "median_s" in r.get("npvae", {}) and "median_s" in r.get(peer, {}):
                ratios.setdefault(peer, {})[row] = r["npvae"]["median_s"] / r[peer]["median_s"]
                ratios_min.setdefault(peer, {})[row] = r["npvae"]["min_s"] / r[peer]["min_s"]
    report = {"meta": meta, "settings": {k: v for k, v in vars(a).items() if not k.startswith("worker")},
              "rows": rows, "ratios": ratios, "ratios_by_min": ratios_min, "breakdown": breakdown, "profile": profile}
    text = render(report)
    report["table"] = text
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(text)
    print(f"\nwrote {out} (total {meta['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
