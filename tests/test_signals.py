"""SIGTERM is handled like SIGINT (issue #21, item 2): what ``kill``, ``timeout``, a batch scheduler or
a container stop sends saves a checkpoint of the last completed step, prints the resume
command and exits with 143; the resumed run reaches the parameters of an uninterrupted one.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npvae.checkpoint import load_checkpoint
from npvae.models import VAE
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer, TrainingInterrupted
from helpers import fake_images

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "train_mnist.py"


def _run(args, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def test_trainer_stops_on_sigterm_after_the_step_and_saves_it(tmp_path):
    model = VAE(64, 3, (16,), rng=np.random.default_rng(0), dtype=np.float64)
    opt = Adam(model.params, lr=1e-2)
    t = Trainer(model, opt, fake_images(300), None, TrainConfig(epochs=2, batch_size=32),
                rng=np.random.default_rng(7), checkpoint_path=tmp_path / "c.npz", log=None)
    real_step = opt.step

    def step_then_sigterm(grads):
        real_step(grads)
        if t.step == 12:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag: this step completes
    opt.step = step_then_sigterm
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after epoch 2, batch 3; checkpoint saved") as info:
        t.fit()
    assert info.value.exit_code == 143 and info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    saved = load_checkpoint(tmp_path / "c.npz")
    assert saved.meta["step"] == 13 and saved.meta["batch"] == 3


def test_sigterm_saves_and_resume_is_bit_for_bit(fake_mnist, tmp_path):
    """Like tests/test_demo.py's Ctrl-C test, with SIGTERM: exit 143, checkpoint + figures + resume
    command; then --resume reaches exactly the parameters of an uninterrupted run (float64)."""
    common = ["--data-dir", fake_mnist, "--dtype", "float64", "--epochs", "3", "--batch-size", "32",
              "--hidden", "96", "--eval-k", "5", "--eval-images", "20"]
    steps = 3 * 38
    stopped, reference = tmp_path / "stopped", tmp_path / "reference"
    proc = _run([DEMO, *common, "--out", stopped])
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("epoch   1/3"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM after epoch" in err and "resume with:" in err and "--resume" in err
    saved = load_checkpoint(stopped / "checkpoint.npz")
    assert 38 <= saved.meta["step"] < steps
    assert (stopped / "reconstructions.png").is_file()

    resumed = _run([DEMO, *common, "--out", stopped, "--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    full = _run([DEMO, *common, "--out", reference])
    out, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    a, b = load_checkpoint(stopped / "checkpoint.npz"), load_checkpoint(reference / "checkpoint.npz")
    assert a.meta["step"] == b.meta["step"] == steps
    for k in b.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    ma = json.loads((stopped / "metrics.json").read_text())
    mb = json.loads((reference / "metrics.json").read_text())
    assert ma["test_neg_elbo"] == mb["test_neg_elbo"]


def test_sigterm_outside_training_exits_143_with_a_message(tmp_path, fake_mnist):
    code = ("import os, signal, sys; sys.argv[0] = 'train_mnist.py'; from demos import train_mnist as d; "
            "d.npdata.load_mnist = lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM); "
            f"sys.exit(d.main(['--out', {str(tmp_path / 'o')!r}]))")
    proc = _run(["-c", code])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "train_mnist.py: terminated (SIGTERM) outside training" in err, err


def test_reproduce_iwae_sigterm_saves_and_the_same_command_resumes(fake_mnist, tmp_path):
    script = ROOT / "benchmarks" / "reproduce_iwae.py"
    run = [script, "--model", "vae", "--epochs", 8, "--train-limit", 600, "--test-limit", 20, "--eval-k", 2,
           "--quiet", "--batch-size", 20, "--out", tmp_path]
    env = {"NPVAE_DATA_DIR": str(fake_mnist)}
    proc = _run(run, env)
    for line in proc.stdout:
        if "epoch   1/" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "run the same command again to resume" in err
    again = _run(run, env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "resumed at epoch" in out, err
