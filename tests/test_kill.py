"""Every model kind survives SIGKILL: the last checkpoint loads and resumes to the same parameters.

For each kind the demo trains, a demo process is killed with SIGKILL in the middle of an
epoch (after the first epoch's checkpoint is written); the checkpoint it leaves must load,
``--resume`` must finish the run, and the final parameters must equal those of a run that
was never interrupted, bit for bit in float64. The same for
``benchmarks/reproduce_iwae.py``, whose long runs are meant to outlive a session.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from npvae.checkpoint import load_checkpoint
from npvae.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "train_mnist.py"
MODEL_FLAGS = {"iwae": ["--k", "3"], "flow": ["--flow", "planar", "--flow-length", "2"]}


def _run(args, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _kill_mid_training(args, checkpoint: Path, epochs: int, env=None) -> int:
    """Start ``args``, SIGKILL it once the first epoch's checkpoint exists; return the epoch it holds."""
    proc = _run(args, env)
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    epoch = load_checkpoint(checkpoint).meta["epoch"]  # loads: the kill never leaves a torn file
    assert 1 <= epoch < epochs, f"the kill landed after training ended (epoch {epoch})"
    return epoch


def _params(path: Path) -> dict:
    return load_checkpoint(path).params


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_demo_killed_mid_epoch_resumes_to_the_same_parameters(kind, fake_mnist, tmp_path):
    epochs = 4
    data = ["--data-dir", fake_mnist, "--train-limit", 1200, "--test-limit", 50, "--eval-k", 2,
            "--eval-images", 10, "--epochs", epochs, "--quiet"]
    model = ["--model", kind, *MODEL_FLAGS.get(kind, []), "--dtype", "float64", "--hidden", 64,
             "--latent-dim", 2, "--batch-size", 20]
    whole = _run([DEMO, *data, *model, "--out", tmp_path / "whole"])
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out

    ckpt = tmp_path / "killed" / "checkpoint.npz"
    _kill_mid_training([DEMO, *data, *model, "--out", tmp_path / "killed"], ckpt, epochs)
    resumed = _run([DEMO, *data, "--out", tmp_path / "killed", "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out

    a, b = _params(tmp_path / "whole" / "checkpoint.npz"), _params(ckpt)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_reproduce_iwae_killed_mid_epoch_resumes_to_the_same_parameters(fake_mnist, tmp_path):
    script = ROOT / "benchmarks" / "reproduce_iwae.py"
    run = [script, "--model", "vae", "--epochs", 8, "--train-limit", 1200, "--test-limit", 50, "--eval-k", 2,
           "--quiet", "--batch-size", 20]
    env = {"NPVAE_DATA_DIR": str(fake_mnist)}
    whole = _run([*run, "--out", tmp_path / "whole"], env)
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out

    ckpt = tmp_path / "killed" / "vae" / "checkpoint.npz"
    _kill_mid_training([*run, "--out", tmp_path / "killed"], ckpt, 8, env)
    again = _run([*run, "--out", tmp_path / "killed"], env)  # the same command resumes
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "resumed at epoch" in out, out

    a, b = _params(tmp_path / "whole" / "vae" / "checkpoint.npz"), _params(ckpt)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
