"""What each speed trick left in npvae saves, measured on the main row of bench_train.py.

npvae keeps the textbook form of every computation unless a faster form saves at least 5 %
of a benchmark row; the fast form then sits beside the textbook line behind a flag. This
script measures each flag on and off, on the main row of ``bench_train.py`` (the
784-400-20 ReLU Bernoulli VAE of the PyTorch examples, batch 128, Adam lr 1e-3, float32,
dynamically binarized MNIST, 469 steps per epoch), alternating the two settings in fresh
subprocesses round after round, and reports the median seconds per epoch of each and the
saving ``(off - on) / off``. Seconds are wall-clock by default; ``--clock cpu`` uses the
process's CPU seconds instead, which other processes on a shared machine barely disturb
(with ``--threads 1`` they equal the wall time of an idle machine):

* ``skip_input_grad``: :class:`npvae.layers.Linear` returns no dL/dx for the encoder's first
  layer (x is data) instead of computing ``dy @ W.T``;
* ``fast_adam``: :data:`npvae.optim.FAST_ADAM`, Adam's update reordered as Kingma & Ba's
  section 2 suggests and run on cache-sized slices, against Algorithm 1's literal lines;
* ``flush_subnormals``: :data:`npvae.optim.FLUSH_SUBNORMALS`, Adam's moments zeroed where they
  would decay into float32 subnormals. Subnormals appear only after a few epochs, so this
  trick is timed on the last ``--flush-timed`` of ``--flush-epochs`` epochs.

and an evaluation trick on the ``log_likelihood`` row of bench_train.py (an untrained
784-400-20 VAE, k = 1000 importance samples on 1,000 statically binarized test images,
batches of 100; one timed pass per process):

* ``iwae_chunks``: :data:`npvae.evaluate.CHUNK_ELEMENTS` = 2**18 decoder outputs per chunk
  (1 MB, in cache) against 2**24 (64 MB, a chunk that only bounds memory).

Usage::

    python benchmarks/bench_tricks.py --data-dir /path/to/mnist            # ~10 min on 2 cores
    python benchmarks/bench_tricks.py --rounds 1 --epochs 1 --flush-epochs 2 --flush-timed 1 \
        --train-images 2560 --out /tmp/tricks.json                          # smoke test

Writes ``benchmarks/results/tricks.json`` (``--out``) with the commit, the machine and every
epoch time, and prints a table. Each process uses ``--threads`` BLAS threads (default: all
CPUs), as bench_train.py does. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRICKS = ("skip_input_grad", "fast_adam", "flush_subnormals", "iwae_chunks")
EVAL_TRICKS = ("iwae_chunks",)
THRESHOLD = 0.05  # a fast form stays only if it saves at least this fraction of the row


def worker(spec: dict) -> dict:
    """Run the trick's row with it on or off; return the epoch (or pass) times in seconds."""
    import numpy as np

    from npvae import data, evaluate, optim
    from npvae.models import VAE

    trick, on = spec["trick"], spec["on"]
    if trick == "flush_subnormals":
        optim.FLUSH_SUBNORMALS = on
    if trick == "fast_adam":
        optim.FAST_ADAM = on
    if trick == "iwae_chunks":
        evaluate.CHUNK_ELEMENTS = 1 << 18 if on else 1 << 24
    if trick in EVAL_TRICKS:
        images, _ = data.load_mnist("test", data_dir=spec["data_dir"])
        x = data.batch_to_float(data.binarize_static(images[:spec["ll_images"]], seed=1), binarize="none")
        model = VAE(784, 20, (400,), rng=np.random.default_rng(spec["seed"]))
        model.log_likelihood(x[:100], k=100, rng=np.random.default_rng(0))  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        ll = model.log_likelihood(x, k=spec["ll_k"], rng=np.random.default_rng(0))
        return {"times": [time.perf_counter() - start], "cpu": [time.process_time() - cpu],
                "mean_log_px": float(ll.mean())}
    images, _ = data.load_mnist("train", data_dir=spec["data_dir"])
    images = images[:spec["train_images"]] if spec["train_images"] else images
    model = VAE(784, 20, (400,), rng=np.random.default_rng(spec["seed"]))
    if trick == "skip_input_grad":
        model.encoder[0].skip_input_grad = on
    opt = optim.Adam(model.params, lr=1e-3)
    rng = np.random.default_rng(spec["seed"] + 1)
    times, cpus = [], []
    for _ in range(spec["epochs"]):
        start, cpu = time.perf_counter(), time.process_time()
        for x in data.minibatches(images, 128, rng=rng):
            model.forward(x, rng=rng)
            opt.step(model.backward())
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return {"times": times[-spec["timed"]:], "cpu": cpus[-spec["timed"]:]}


def run(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("NPVAE_DATA_DIR"), help="folder of the MNIST files")
    p.add_argument("--rounds", type=int, default=3, help="alternations of on/off per trick (default 3)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per process, the first untimed (default 3)")
    p.add_argument("--flush-epochs", type=int, default=8, help="epochs per process for flush_subnormals (default 8)")
    p.add_argument("--flush-timed", type=int, default=3, help="timed last epochs for flush_subnormals (default 3)")
    p.add_argument("--train-images", type=int, default=0, help="use only the first N training images (smoke tests)")
    p.add_argument("--ll-images", type=int, default=1000, help="test images of the log_likelihood row (default 1000)")
    p.add_argument("--ll-k", type=int, default=1000, help="importance samples of the log_likelihood row (default 1000)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads per process")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the saving is computed from: wall seconds (an idle machine), or the process's CPU "
                        "seconds, which other processes barely disturb (use it with --threads 1 on a shared machine)")
    p.add_argument("--tricks", default=",".join(TRICKS), help=f"comma-separated subset of {', '.join(TRICKS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "tricks.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))))
        return 0
    tricks = [t for t in a.tricks.split(",") if t]
    bad = [t for t in tricks if t not in TRICKS]
    if bad:
        p.error(f"--tricks: expected names from {', '.join(TRICKS)}, got {', '.join(bad)}")
    for name in ("rounds", "epochs", "flush_epochs", "flush_timed", "threads", "ll_images", "ll_k"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(a, name)}")
    if a.epochs < 2 or a.flush_timed > a.flush_epochs:
        p.error("--epochs: expected >= 2 (the first is untimed); --flush-timed: expected <= --flush-epochs")
    sys.path.insert(0, str(HERE))
    from bench_train import cpu_info, git_info, versions  # the same machine and commit records

    results = {}
    for trick in tricks:
        epochs, timed = (a.flush_epochs, a.flush_timed) if trick == "flush_subnormals" else (a.epochs, a.epochs - 1)
        row = "log_likelihood" if trick in EVAL_TRICKS else "main"
        times, cpus = {True: [], False: []}, {True: [], False: []}
        for r in range(a.rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                spec = {"trick": trick, "on": on, "epochs": epochs, "timed": timed, "seed": a.seed,
                        "data_dir": a.data_dir, "train_images": a.train_images, "ll_images": a.ll_images,
                        "ll_k": a.ll_k}
                out = run(spec, a.threads)
                got = out["times"]
                times[on] += got
                cpus[on] += out["cpu"]
                print(f"{trick:18s} round {r + 1} {'on ' if on else 'off'}: "
                      + ", ".join(f"{t:.2f}" for t in got) + (" s/pass" if row != "main" else " s/epoch"),
                      file=sys.stderr, flush=True)
        clock = times if a.clock == "wall" else cpus
        on_s, off_s = statistics.median(clock[True]), statistics.median(clock[False])
        saving = (off_s - on_s) / off_s
        results[trick] = {"row": row, "median_on_s": on_s, "median_off_s": off_s, "saving": saving,
                          "keep": saving >= THRESHOLD, "epochs_per_process": epochs, "timed_epochs_per_process": timed,
                          "times_on": times[True], "times_off": times[False],
                          "cpu_on": cpus[True], "cpu_off": cpus[False]}
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "git": git_info(), "cpu": cpu_info(),
              "versions": versions(None), "threads": a.threads, "rounds": a.rounds, "threshold": THRESHOLD,
              "clock": a.clock,
              "rows": {"main": "784-400-20 relu B=128 float32, Adam lr 1e-3, dynamic binarization"
                       + (f", first {a.train_images} training images" if a.train_images else ", 60000 training images"),
                       "log_likelihood": f"untrained 784-400-20 VAE, k={a.ll_k}, {a.ll_images} static-binarized test "
                                         "images, batches of 100 (one pass per process)"},
              "tricks": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{a.clock} seconds, median of {a.rounds} alternated rounds, {a.threads} thread(s) per process")
    print(f"{'trick':18s} {'row':15s} {'on s':>8s} {'off s':>8s} {'saving':>7s}  keep (>= {THRESHOLD:.0%})")
    for trick, r in results.items():
        print(f"{trick:18s} {r['row']:15s} {r['median_on_s']:8.3f} {r['median_off_s']:8.3f} {r['saving']:7.1%}  {r['keep']}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
