#!/usr/bin/env python
"""The papers' orderings at equal epochs: one vs two stochastic layers, the ELBO vs the IWAE bound,
the standard prior vs the VampPrior, and flow posteriors, all on one budget.

Every run trains for the same 100 epochs (``--epochs``) at batch 100 on dynamically binarized
MNIST with Adam (beta1 0.9, beta2 0.999, eps 1e-4; Burda et al. 2016, section 5) and one
learning-rate schedule, lr_t = 1e-3 * 10**(-(t - 1) / T) over the T steps of the run (the
IWAE paper's first and last rates, 1e-3 and 1e-4, joined by one exponential decay instead of
its 3,280 epochs of stages). The architectures are the IWAE paper's (tanh):

=========  =====================================================================
run        model
=========  =====================================================================
vae        VAE 784-200-200-50 (Burda et al. Table 1: 86.76 nats)
iwae5      IWAE k = 5, same networks (85.54)
vae_2l     HierarchicalVAE 784-(200,200)-100-(100,100)-50, k = 1 (85.33)
iwae5_2l   the same with k = 5 (83.89)
vamp       VampVAE on the one-layer networks, K = 100 pseudo-inputs (the paper's 500 cost
           44 CPU-s an epoch here against 11 at K = 100 and 3 for the VAE), 10 epochs of KL warm-up
           (Tomczak & Welling 2018, Table 2, K = 500, their own one-layer networks: 88.56 -> 85.57)
vae_warmup the VAE with the same 10 epochs of KL warm-up: the VampVAE's baseline
planar     FlowVAE, 10 planar steps (Rezende & Mohamed 2015, Table 2, K = 10: 87.5, their networks)
iaf        FlowVAE, 2 IAF steps (Kingma et al. 2016 report no MLP number to compare)
=========  =====================================================================

Along the way the test NLL is estimated at epochs 1, 2, 5, 10, 20, ..., 100 (k = 500, the first
1,000 test images: the curve); at the end log p(x) with k = 5000 on all 10,000 test images, its
standard error, and the active units per stochastic layer (Burda et al. section 5.2). Results go
to ``<out>/<run>/result.json``; ``--table`` gathers them into ``<out>/table.json``, ``table.md``
and ``curve.png``.

Usage (one run per process with one thread; run two side by side on two cores)::

    NPVAE_DATA_DIR=../shared/data/mnist OMP_NUM_THREADS=1 \\
        python benchmarks/reproduce_equal_epochs.py --run vae
    python benchmarks/reproduce_equal_epochs.py --table

A run is checkpointed after every epoch (atomically; loaded without pickle) and resumes from
its last completed epoch when the same command is run again, after a kill too; the curve
points already measured are kept in ``<out>/<run>/curve.json``. The run folder is locked for
the run's life. SIGINT / SIGTERM save the last completed step and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_iwae import _folder, _nonnegative_int, _positive_int, run_locked  # noqa: E402

from npvae import data as npdata  # noqa: E402
from npvae import evaluate  # noqa: E402
from npvae.checkpoint import atomic_write  # noqa: E402
from npvae.models import MODELS as KINDS  # noqa: E402
from npvae.optim import Adam, ExponentialLR  # noqa: E402
from npvae.train import TrainConfig, Trainer  # noqa: E402

PROG = "reproduce_equal_epochs.py"
ONE_LAYER = {"z_dim": 50, "hidden": (200, 200), "activation": "tanh", "likelihood": "bernoulli"}
TWO_LAYERS = {"z_dims": (100, 50), "hidden": ((200, 200), (100, 100)), "activation": "tanh",
              "likelihood": "bernoulli"}
RUNS = {  # run -> (kind, constructor keywords, the paper's NLL and where it is from)
    "vae": ("vae", ONE_LAYER, (86.76, "Burda et al. 2016, Table 1")),
    "iwae5": ("iwae", {**ONE_LAYER, "k": 5}, (85.54, "Burda et al. 2016, Table 1")),
    "vae_2l": ("hvae", {**TWO_LAYERS, "k": 1}, (85.33, "Burda et al. 2016, Table 1")),
    "iwae5_2l": ("hvae", {**TWO_LAYERS, "k": 5}, (83.89, "Burda et al. 2016, Table 1")),
    "vamp": ("vamp", {**ONE_LAYER, "n_pseudo": 100}, (85.57, "Tomczak & Welling 2018, Table 2 (standard prior 88.56)")),
    "vae_warmup": ("vae", ONE_LAYER, (88.56, "Tomczak & Welling 2018, Table 2, standard prior")),
    "planar": ("flow", {**ONE_LAYER, "flow": "planar", "flow_length": 10}, (87.5, "Rezende & Mohamed 2015, Table 2")),
    "iaf": ("flow", {**ONE_LAYER, "flow": "iaf", "flow_length": 2}, (None, "no MLP result in Kingma et al. 2016")),
}
LR, LR_END, BETAS, ADAM_EPS = 1e-3, 1e-4, (0.9, 0.999), 1e-4
#: runs with a linear KL warm-up over this many epochs (Bowman et al. 2016; Tomczak & Welling train
#: every model with one). Without it the VampVAE collapses at once: the encoder can make
#: q(z|x) = q(z|u_k) for every x by ignoring its input, and the KL estimate stays at 0.00 nats
#: from the first epoch (measured: test -ELBO 200.5 after 11 epochs). The VAE it is compared
#: with, vae_warmup, gets the same warm-up.
WARMUP_EPOCHS = {"vamp": 10, "vae_warmup": 10}
CURVE_K, CURVE_IMAGES = 500, 1000


def curve_epochs(epochs: int) -> list[int]:
    """The epochs at which the curve's NLL is measured: 1, 2, 5, then every 10th, and the last."""
    return sorted({e for e in (1, 2, 5, *range(10, epochs + 1, 10), epochs) if e <= epochs})


def build(args, run: str):
    """The run's model, its Adam with the decay schedule, and a Trainer checkpointing into ``<out>/<run>``."""
    kind, kwargs, _ = RUNS[run]
    model = KINDS[kind](784, **kwargs, rng=np.random.default_rng([args.seed, 0]))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, binarize="dynamic", seed=args.seed,
                         warmup_epochs=WARMUP_EPOCHS.get(run, 0))
    steps = args.epochs * npdata.n_batches(args.train_limit or 60000, args.batch_size)
    schedule = ExponentialLR((LR_END / LR) ** (1.0 / steps))  # 1e-3 at step 1, 1e-4 after the last
    opt = Adam(model.params, lr=LR, betas=BETAS, eps=ADAM_EPS, schedule=schedule)
    return model, opt, config


def layer_activity(model, x: np.ndarray) -> list[int]:
    """Active units per stochastic layer (Var_x E_q[z_u] > 0.01, Burda et al. section 5.2)."""
    if hasattr(model, "layer_active_units"):  # two stochastic layers
        return [int(n) for n in model.layer_active_units(x)]
    return [evaluate.active_units(model, x)]


def nll(model, x: np.ndarray, k: int, seed: int, quiet: bool) -> tuple[float, float]:
    """-log p(x) with k importance samples: the mean over x and its standard error, nats."""
    ll = evaluate.log_likelihood(model, x, k, rng=np.random.default_rng([seed, 4, k]), batch_size=100,
                                 progress=not quiet)
    return float(-ll.mean()), float(ll.std(ddof=1) / np.sqrt(len(ll)))


def train_and_evaluate(args, run: str, train_x: np.ndarray, test_x: np.ndarray) -> dict:
    run_dir = Path(args.out) / run
    ckpt, curve_path = run_dir / "checkpoint.npz", run_dir / "curve.json"
    model, opt, config = build(args, run)
    log = (lambda line: print(f"[{run}] {line}", flush=True))
    trainer = Trainer(model, opt, train_x, test_x[:CURVE_IMAGES], config, rng=np.random.default_rng([args.seed, 1]),
                      checkpoint_path=ckpt, log=log, progress=not args.quiet)
    curve = []
    if ckpt.exists():
        trainer.load(ckpt)  # checked as data and against this run's settings
        curve = json.loads(curve_path.read_text()) if curve_path.exists() else []
        log(f"resumed at epoch {trainer.epoch} of {args.epochs}")
    # the curve's test set: the Trainer's fixed binarization of the first 1,000 test images
    x_curve = npdata.batch_to_float(trainer.test_images, binarize="none", dtype=model.dtype)
    for target in curve_epochs(args.epochs):
        if target > trainer.epoch:
            trainer.config.epochs = target
            trainer.fit()
        if target == trainer.epoch and target not in [c["epoch"] for c in curve]:
            value, stderr = nll(model, x_curve, CURVE_K, args.seed, quiet=True)
            curve.append({"epoch": target, "nll": value, "nll_stderr": stderr,
                          "test_loss": trainer.history[-1].get("test_loss"),
                          "train_minutes": sum(h["seconds"] for h in trainer.history) / 60})
            atomic_write(curve_path, lambda f: f.write(json.dumps(curve, indent=1).encode()))
            log(f"epoch {target}: test NLL {value:.2f} +- {stderr:.2f} (k = {CURVE_K}, {len(x_curve)} images)")
    # the final estimate: one fixed binarization of all test images (the Trainer's: seed + 1)
    x = npdata.batch_to_float(npdata.binarize_static(test_x.reshape(len(test_x), -1), seed=args.seed + 1),
                              binarize="none", dtype=model.dtype)
    t = time.perf_counter()
    value, stderr = nll(model, x, args.eval_k, args.seed, args.quiet)
    kind, kwargs, (paper, source) = RUNS[run]
    result = {"run": run, "config": model.config, "nll": value, "nll_stderr": stderr, "k": args.eval_k,
              "test_images": len(x), "active_units": layer_activity(model, x),
              "z_dims": list(kwargs.get("z_dims", [kwargs.get("z_dim")])), "epochs": trainer.epoch,
              "batch_size": args.batch_size, "warmup_epochs": WARMUP_EPOCHS.get(run, 0), "train_minutes": sum(h["seconds"] for h in trainer.history) / 60,
              "eval_minutes": (time.perf_counter() - t) / 60, "paper_nll": paper, "paper_source": source,
              "curve": curve, "final_test_loss": trainer.history[-1].get("test_loss")}
    atomic_write(run_dir / "result.json", lambda f: f.write(json.dumps(result, indent=1).encode()))
    log(f"test NLL {value:.2f} +- {stderr:.2f} nats (k = {args.eval_k}, {len(x)} images), "
        f"active units {result['active_units']}, {result['train_minutes']:.1f} min of training")
    return result


#: the papers' findings: (better run, worse run, the gap target in nats (half the paper's), the paper's gap)
FINDINGS = [
    ("vae_2l", "vae", 0.7, 86.76 - 85.33, "two stochastic layers below one (VAE)"),
    ("iwae5_2l", "iwae5", None, 85.54 - 83.89, "two stochastic layers below one (IWAE k = 5)"),
    ("iwae5", "vae", 0.6, 86.76 - 85.54, "IWAE k = 5 below the VAE (one layer)"),
    ("iwae5_2l", "vae_2l", None, 85.33 - 83.89, "IWAE k = 5 below the VAE (two layers)"),
    ("vamp", "vae_warmup", 1.5, 88.56 - 85.57, "the VampPrior below the standard prior (both with warm-up)"),
]


def findings(rows: list[dict]) -> list[dict]:
    """Each of :data:`FINDINGS` whose two runs are finished: the gap (worse - better NLL, nats) with the
    standard error of a difference of two independent estimates (an overestimate: both use the same images),
    whether the ordering holds, and whether the gap reaches its target (half the paper's)."""
    nll = {r["run"]: (r["nll"], r["nll_stderr"]) for r in rows}
    out = []
    for better, worse, target, paper_gap, what in FINDINGS:
        if better in nll and worse in nll:
            gap = nll[worse][0] - nll[better][0]
            out.append({"finding": what, "better": better, "worse": worse, "gap": gap,
                        "gap_stderr": float(np.hypot(nll[worse][1], nll[better][1])), "paper_gap": paper_gap,
                        "target": target, "ordering_holds": gap > 0,
                        "target_met": None if target is None else gap >= target})
    return out


def table(out: Path) -> str:
    """Gather ``<out>/<run>/result.json`` into ``table.json``, ``table.md`` and ``curve.png``; return the Markdown."""
    rows = [json.loads((out / r / "result.json").read_text()) for r in RUNS if (out / r / "result.json").exists()]
    lines = ["| run | test NLL (nats) | active units | paper | epochs | training (min) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        units = " + ".join(f"{a}/{z}" for a, z in zip(r["active_units"], r["z_dims"]))
        paper = f"{r['paper_nll']:.2f} ({r['paper_source']})" if r["paper_nll"] else r["paper_source"]
        lines.append(f"| {r['run']} | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | {units} | {paper} | "
                     f"{r['epochs']} | {r['train_minutes']:.1f} |")
    found = findings(rows)
    lines += ["", "| finding | gap (nats) | paper's gap | target | ordering | target met |", "|---|---|---|---|---|---|"]
    for f in found:
        target = "—" if f["target"] is None else f"≥ {f['target']:.1f}"
        met = "—" if f["target_met"] is None else ("yes" if f["target_met"] else "no")
        lines.append(f"| {f['finding']} | {f['gap']:.2f} ± {f['gap_stderr']:.2f} | {f['paper_gap']:.2f} | {target} | "
                     f"{'holds' if f['ordering_holds'] else 'reversed'} | {met} |")
    text = "\n".join(lines) + "\n"
    atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    atomic_write(out / "table.json", lambda f: f.write(json.dumps({"rows": rows, "findings": found}, indent=1).encode()))
    if rows:
        curve_figure(rows, out / "curve.png")
    return text


def curve_figure(rows: list[dict], path: Path) -> None:
    """Test NLL (k = 500, 1,000 images) against epoch, one line per run, the final k = 5000 NLL as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for i, r in enumerate(rows):
        epochs = [c["epoch"] for c in r["curve"]]
        ax.plot(epochs, [c["nll"] for c in r["curve"]], "-", marker=".", color=f"C{i}", lw=1.2,
                label=f"{r['run']}: {r['nll']:.2f} at the end (k = {r['k']:,}, all test images)")
        ax.plot([r["epochs"]], [r["nll"]], "o", color=f"C{i}", ms=6)
    final = [r["nll"] for r in rows]
    ax.set_ylim(min(final) - 2.0, max(final) + 12.0)
    ax.set_xlabel("epoch (batch 100, 600 steps each)")
    ax.set_ylabel("test -log p(x), nats per image")
    ax.set_title("Equal epochs, the IWAE paper's networks: test NLL while training\n"
                 f"(lines: k = {CURVE_K}, first {CURVE_IMAGES:,} test images; dots: k = 5000, all 10,000)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))  # below: never over a curve
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", choices=list(RUNS), help="which run to train and evaluate")
    p.add_argument("--epochs", type=_positive_int, default=100, help="the budget of every run (default 100)")
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--eval-k", type=_positive_int, default=5000)
    p.add_argument("--train-limit", type=_positive_int, default=None, help="first N training images (quick checks)")
    p.add_argument("--test-limit", type=_positive_int, default=None, help="first N test images (quick checks, >= 2)")
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--out", type=_folder, default="benchmarks/results/equal_epochs")
    p.add_argument("--quiet", action="store_true", help="no progress lines inside epochs or during the NLL estimate")
    p.add_argument("--table", action="store_true", help="only gather the finished runs into table.json / table.md")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.table:
        print(table(Path(args.out)), end="")
        return 0
    if args.run is None:
        p.error("--run: expected one of " + ", ".join(RUNS) + " (or --table), got none")
    if args.test_limit is not None and args.test_limit < 2:
        p.error(f"--test-limit: expected at least 2 test images (a standard error needs a spread), got {args.test_limit}")
    if RUNS[args.run][0] not in KINDS:
        p.error(f"--run {args.run}: expected a model kind npvae registers, got {RUNS[args.run][0]!r} (not in npvae.models.MODELS)")

    def body(train_x, test_x):
        train_and_evaluate(args, args.run, train_x, test_x)
        print(table(Path(args.out)), end="")

    return run_locked(PROG, args, args.run, body)


if __name__ == "__main__":
    sys.exit(main())
