#!/usr/bin/env python
"""Reproduce Burda, Grosse & Salakhutdinov 2016 (IWAE), Table 1, one stochastic layer, on MNIST.

The paper's setup: 784-200-200-50 tanh encoder and decoder, Bernoulli decoder, dynamically
binarized MNIST, batch 20, Adam (beta1 0.9, beta2 0.999, eps 1e-4), and the schedule of
8 stages, stage i = 0..7 running 3**i epochs at learning rate 0.001 * 10**(-i/7): 3,280
epochs in all. Test log p(x) is the importance-sampled estimate with k = 5000 on all
10,000 test images. Their numbers: VAE 86.76, IWAE k=5 85.54, IWAE k=50 84.78 nats.

Usage (one model per process; run several side by side, each with one thread)::

    NPVAE_DATA_DIR=../shared/data/mnist OMP_NUM_THREADS=1 \\
        python benchmarks/reproduce_iwae.py --model vae --budget-minutes 90
    python benchmarks/reproduce_iwae.py --model iwae5 --budget-minutes 90
    python benchmarks/reproduce_iwae.py --model vae --full          # the paper's 3,280 epochs
    python benchmarks/reproduce_iwae.py --table                      # JSON + Markdown of all runs

``--budget-minutes`` keeps the paper's 8 stages and learning rates but compresses them:
the first epoch is timed, the number of epochs that fits the budget is computed, and each
stage gets the same share of it as in the paper (3**i / 3280, at least one epoch). The plan
is written beside the checkpoint, so an interrupted (even killed) run resumes with the same
plan from its last completed epoch: run the same command again. After training the script
evaluates log p(x) (k = 5000, progress on stderr), counts active units, and writes
``<out>/<model>/result.json``; ``--table`` gathers them into ``<out>/table.json`` and
``<out>/table.md``.

Every argument is checked before the data is loaded, with the demo's one-line errors
(``reproduce_iwae.py: error: <name>: expected ..., got ...``, exit code 2): counts are
integers >= 1 (``--epochs 0`` is refused, not read as "not given"), the budget a finite
number > 0, sizes within memory. The run folder ``<out>/<model>`` is locked for the
run's life (a second run on it is refused, naming the first one's pid) and cleared of
dead runs' temporary files; ``plan.json`` and the checkpoint are checked as data, and a
resume with another ``--batch-size``, ``--seed`` or ``--train-limit`` is refused. SIGINT
and SIGTERM save the last completed step and exit with 130 / 143: run the same command
again to resume.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from npvae import data as npdata
from npvae import evaluate
from npvae.checkpoint import FolderInUse, atomic_write, lock_folder, remove_stale_temporaries
from npvae.models import build_model
from npvae.optim import Adam
from npvae.train import NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted, check_run_sizes

PROG = "reproduce_iwae.py"

PAPER = {"vae": 86.76, "iwae5": 85.54, "iwae50": 84.78}
PAPER_STAGES = [3 ** i for i in range(8)]  # epochs per stage; lr = 1e-3 * 10 ** (-i / 7)
MODELS = {  # name -> (kind, extra constructor arguments)
    "vae": ("vae", {}),
    "iwae5": ("iwae", {"k": 5}),
    "iwae50": ("iwae", {"k": 50}),
    "planar": ("flow", {"flow": "planar", "flow_length": 10}),
    "iaf": ("flow", {"flow": "iaf", "flow_length": 2}),
}


def stage_plan(total_epochs: int) -> list[int]:
    """The paper's 8 stages compressed to about ``total_epochs`` (each stage >= 1 epoch)."""
    scale = total_epochs / sum(PAPER_STAGES)
    return [max(1, round(n * scale)) for n in PAPER_STAGES]


class StageLR:
    """Learning-rate factor 10**(-i/7) during stage i, stage boundaries in optimizer steps."""

    def __init__(self, plan: list[int], steps_per_epoch: int) -> None:
        self.ends = np.cumsum(plan) * steps_per_epoch

    def __call__(self, t: int) -> float:
        stage = min(int(np.searchsorted(self.ends, t, side="left")), len(self.ends) - 1)
        return 10.0 ** (-stage / 7)


def build(args, name, train_x, test_x, run_dir):
    kind, extra = MODELS[name]
    model = build_model(kind, 784, 50, (200, 200), "tanh", "bernoulli", rng=np.random.default_rng([args.seed, 0]),
                        **extra)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, binarize="dynamic", seed=args.seed)
    opt = Adam(model.params, lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    trainer = Trainer(model, opt, train_x, test_x, config, rng=np.random.default_rng([args.seed, 1]),
                      checkpoint_path=run_dir / "checkpoint.npz", log=lambda line: print(f"[{name}] {line}", flush=True),
                      progress=not args.quiet)
    return model, trainer


def train(args, name, train_x, test_x) -> dict:
    """Train ``name`` by the plan in ``<out>/<name>/plan.json``, resuming from its checkpoint if both exist.

    The plan is the paper's stages (``--full``), compressed to ``--epochs``, or compressed to
    what fits ``--budget-minutes`` at the speed of a timed first epoch. A checkpoint without
    a plan (a kill between the two writes) starts the run again from scratch.
    """
    run_dir = Path(args.out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path, ckpt_path = run_dir / "plan.json", run_dir / "checkpoint.npz"
    model, trainer = build(args, name, train_x, test_x, run_dir)
    if plan_path.exists() and ckpt_path.exists():
        plan = read_plan(plan_path)
        trainer.config.epochs = sum(plan["stages"])
        trainer.optimizer.schedule = StageLR(plan["stages"], trainer.steps_per_epoch)
        trainer.load(ckpt_path)  # checked as data, and against this run's --batch-size, --seed, --train-limit
        print(f"[{name}] resumed at epoch {trainer.epoch} of {trainer.config.epochs}", flush=True)
    else:
        if args.full or args.epochs:
            plan = {"stages": PAPER_STAGES if args.full else stage_plan(args.epochs), "budget_minutes": None}
        else:  # time one epoch of the first stage, then fit the stages to the budget
            trainer.optimizer.schedule = StageLR(PAPER_STAGES, trainer.steps_per_epoch)
            trainer.config.epochs = 1
            trainer.fit()
            per_epoch = trainer.history[-1]["seconds"]
            total = max(8, int(args.budget_minutes * 60 / per_epoch))
            plan = {"stages": stage_plan(total), "first_epoch_s": per_epoch, "budget_minutes": args.budget_minutes}
        atomic_write(plan_path, lambda f: f.write(json.dumps(plan).encode()))
        trainer.config.epochs = sum(plan["stages"])
        trainer.optimizer.schedule = StageLR(plan["stages"], trainer.steps_per_epoch)
        print(f"[{name}] plan: {plan['stages']} epochs per stage ({trainer.config.epochs} in all)", flush=True)
    trainer.fit()
    return {"plan": plan, "history": trainer.history, "model": model}


def read_plan(path: Path) -> dict:
    """``plan.json``, checked: ``stages`` 8 integers >= 1, ``budget_minutes`` null or a number > 0; ValueError otherwise."""
    try:
        plan = json.loads(path.read_text())
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: expected the JSON plan this script writes, got a file it cannot parse ({exc}); "
                         f"delete {path.parent} to start that run again") from None
    stages = plan.get("stages") if isinstance(plan, dict) else None
    if (not isinstance(stages, list) or len(stages) != len(PAPER_STAGES)
            or not all(type(n) is int and n >= 1 for n in stages)):
        raise ValueError(f"{path}: 'stages': expected {len(PAPER_STAGES)} integers >= 1, got {str(stages)[:80]}; "
                         f"delete {path.parent} to start that run again")
    budget = plan.get("budget_minutes")
    if budget is not None and (not isinstance(budget, numbers.Real) or isinstance(budget, bool)
                               or not math.isfinite(budget) or budget <= 0):
        raise ValueError(f"{path}: 'budget_minutes': expected null or a finite number > 0, got {budget!r}")
    return plan


def evaluate_run(args, name, model, history, plan, test_x) -> dict:
    # one fixed binarization of the test set (the Trainer's: seed + 1)
    x = npdata.batch_to_float(npdata.binarize_static(test_x.reshape(len(test_x), -1), seed=args.seed + 1),
                              binarize="none", dtype=model.dtype)
    t = time.perf_counter()
    ll = evaluate.log_likelihood(model, x, args.eval_k, rng=np.random.default_rng([args.seed, 4]), batch_size=100,
                                 progress=not args.quiet)
    seconds_ll = time.perf_counter() - t
    result = {
        "model": name, "config": model.config, "nll": float(-ll.mean()),
        "nll_stderr": float(ll.std(ddof=1) / np.sqrt(len(ll))), "k": args.eval_k, "test_images": len(ll),
        "active_units": evaluate.active_units(model, x), "epochs": len(history),
        "train_minutes": sum(h["seconds"] for h in history) / 60, "eval_seconds": seconds_ll,
        "stages": plan["stages"], "budget_minutes": plan.get("budget_minutes"),
        "paper_nll": PAPER.get(name), "curve": [(h["epoch"], sum(g["seconds"] for g in history[:i + 1]) / 60,
                                               h.get("test_loss")) for i, h in enumerate(history)],
    }
    atomic_write(Path(args.out) / name / "result.json", lambda f: f.write(json.dumps(result, indent=1).encode()))
    print(f"[{name}] test NLL {result['nll']:.2f} ± {result['nll_stderr']:.2f} nats (k={args.eval_k}), "
          f"{result['active_units']} active units, {result['train_minutes']:.1f} min of training", flush=True)
    return result


def table(out: Path) -> str:
    rows = []
    for name in MODELS:
        p = out / name / "result.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    lines = ["| model | test NLL (nats) | estimated on | paper | active units | epochs | training (min) | schedule |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["budget_minutes"] is not None:
            sched = f"{r['budget_minutes']:g} min budget, stages {r['stages']}"
        else:
            sched = "paper (3,280 epochs)" if r["stages"] == PAPER_STAGES else f"stages {r['stages']}"
        paper = f"{r['paper_nll']:.2f}" if r.get("paper_nll") else "—"
        lines.append(f"| {r['model']} | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | "
                     f"k = {r['k']:,}, {r['test_images']:,} test images | {paper} | {r['active_units']} | "
                     f"{r['epochs']} | {r['train_minutes']:.1f} | {sched} |")
    text = "\n".join(lines) + "\n"
    atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    atomic_write(out / "table.json", lambda f: f.write(json.dumps(rows, indent=1).encode()))
    if rows:
        curve_figure(rows, out / "curve.png")
    return text


def curve_figure(rows: list[dict], path: Path) -> None:
    """The test objective against minutes of training, one line per run, with the final
    k = 5000 NLL as a dot and the paper's NLL as a dashed line (the curve when a budget
    falls short of the target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    for i, r in enumerate(rows):
        color = f"C{i}"
        minutes = [c[1] for c in r["curve"] if c[2] is not None]
        loss = [c[2] for c in r["curve"] if c[2] is not None]
        ax.plot(minutes, loss, color=color, lw=1.2, label=f"{r['model']}: test objective, 2,000 images")
        ax.plot([r["train_minutes"]], [r["nll"]], "o", color=color, ms=6,
                label=f"{r['model']}: final NLL {r['nll']:.2f} (k = {r['k']}, {r['test_images']:,} images)")
        if r.get("paper_nll"):
            ax.axhline(r["paper_nll"], color=color, ls="--", lw=0.8, label=f"{r['model']}: paper {r['paper_nll']:.2f}")
    top = max([100.0] + [r["nll"] + 3.0 for r in rows])  # every final NLL in view (short runs end higher)
    ax.set_ylim(83, top)
    ax.set_xlabel("minutes of training (this machine, one thread per run)")
    ax.set_ylabel("nats per example")
    ax.set_title("Burda et al. 2016, Table 1, on a time budget:\ntest objective (-ELBO or -L_k) while training, final -log p(x)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: never over a curve
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder path, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), help="which row of the table to train and evaluate")
    p.add_argument("--budget-minutes", type=_positive_float, default=90.0,
                   help="training time for the compressed schedule")
    p.add_argument("--full", action="store_true", help="the paper's full 3,280-epoch schedule")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="the paper's stages compressed to this many epochs (>= 1)")
    p.add_argument("--batch-size", type=_positive_int, default=20, help="the paper's batch size is 20")
    p.add_argument("--eval-k", type=_positive_int, default=5000)
    p.add_argument("--train-limit", type=_positive_int, default=None, help="first N training images (quick checks)")
    p.add_argument("--test-limit", type=_positive_int, default=None, help="first N test images (quick checks, >= 2)")
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--out", type=_folder, default="benchmarks/results/reproduce_iwae")
    p.add_argument("--quiet", action="store_true", help="no progress lines inside epochs or during the log p(x) estimate")
    p.add_argument("--table", action="store_true", help="only gather the finished runs into table.json / table.md")
    return p


def check_args(p, args) -> None:
    """Refuse, before the data is loaded, every combination or size the run could not finish with (p.error: exit 2)."""
    if args.table:
        return
    if args.model is None:
        p.error("--model: expected one of " + ", ".join(sorted(MODELS)) + " (or --table), got none")
    if args.full and args.epochs is not None:
        p.error(f"--epochs {args.epochs}: expected it without --full (the paper's 3,280 epochs), got both")
    if args.test_limit is not None and args.test_limit < 2:
        p.error(f"--test-limit: expected at least 2 test images (the NLL's standard error and the active units "
                f"need a spread), got {args.test_limit}")
    kind, extra = MODELS[args.model]
    config = {"kind": kind, "x_dim": 784, "z_dim": 50, "hidden": [200, 200], **extra}
    run = {"batch_size": args.batch_size, "eval_k": args.eval_k,
           "train_images": args.train_limit or 60000, "test_images": args.test_limit or 10000}
    try:
        check_run_sizes(config, run, lambda key, index: "--" + key.replace("_", "-"))
    except ValueError as exc:
        p.error(str(exc))


class Terminated(BaseException):
    """SIGTERM outside training (loading data, evaluating): exit 143."""


def _terminate(signum, frame):
    raise Terminated


def run_locked(prog: str, args, name: str, body) -> int:
    """Run ``body(train_x, test_x)`` for the run ``name`` in ``<args.out>/<name>``; return the exit code.

    The run folder is created, locked for the run's life and cleared of dead runs'
    temporary files; the MNIST images are loaded and cut to ``--train-limit`` /
    ``--test-limit``. Every way the run can end is one line on stderr and an exit code:
    0 done, 1 a non-finite loss, 2 a bad argument, file or a folder in use, 130 / 143 an
    interrupt (training saves its last completed step first). Shared by this script and
    ``reproduce_equal_epochs.py``.
    """
    run_dir = Path(args.out) / name
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    lock = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(run_dir)
        remove_stale_temporaries(run_dir)
        train_x, _ = npdata.load_mnist("train")
        test_x, _ = npdata.load_mnist("test")
        train_x, test_x = train_x[:args.train_limit], test_x[:args.test_limit]
        if len(test_x) < 2:
            raise ValueError(f"test images: expected at least 2, got {len(test_x)}")
        body(train_x, test_x)
        return 0
    except TrainingInterrupted as exc:
        print(f"[{name}] {exc}; run the same command again to resume", file=sys.stderr)
        return exc.exit_code
    except FolderInUse as exc:
        print(f"{prog}: error: --out {args.out}: expected a run folder no other run is using, got {run_dir} locked "
              f"by the run with pid {exc.holder} (still running); wait for it to end, or choose another --out",
              file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\n{prog}: terminated (SIGTERM) outside training; the last checkpoint, if any, is kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ValueError, TypeError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            os.close(lock)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    if args.table:
        print(table(Path(args.out)), end="")
        return 0

    def body(train_x, test_x):
        run = train(args, args.model, train_x, test_x[:2000])  # 2,000 test images for the curve
        evaluate_run(args, args.model, run["model"], run["history"], run["plan"], test_x)
        print(table(Path(args.out)), end="")

    return run_locked(PROG, args, args.model, body)


if __name__ == "__main__":
    sys.exit(main())
