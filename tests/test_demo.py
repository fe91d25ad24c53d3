"""demos/train_mnist.py end to end: outputs, errors, Ctrl-C and exact resume."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npvae import data as npdata
from npvae.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "train_mnist.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("train_mnist", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """A small dataset in the MNIST file format: blurry class prototypes plus noise."""
    folder = tmp_path_factory.mktemp("fake_mnist")
    rng = np.random.default_rng(0)
    protos = rng.random((10, 28, 28)) ** 4
    for prefix, n in (("train", 1200), ("t10k", 300)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(protos[labels] + 0.1 * rng.standard_normal((n, 28, 28)), 0, 1)
        npdata.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (images * 255).astype(np.uint8))
        npdata.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--hidden", "--latent-dim", "--likelihood", "--binarize",
                 "--beta", "--seed", "--dataset", "--data-dir", "--out", "--resume", "--eval-k", "--dtype"):
        assert flag in text
    defaults = demo.build_parser().parse_args([])
    assert (defaults.epochs, defaults.batch_size, defaults.lr, defaults.hidden, defaults.latent_dim) == \
           (10, 128, 1e-3, [400], 20)


def _outputs_ok(out: Path, *, manifold: bool):
    metrics = json.loads((out / "metrics.json").read_text())
    names = ["reconstructions.png", "samples.png", "curves.png", "latent.png", "interpolation.png"]
    names += ["manifold.png"] if manifold else []
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and 1000 < len(data) < 300_000, name
    assert (out / "checkpoint.npz").is_file()
    for key in ("test_loss", "test_reconstruction", "test_kl", "test_log_likelihood", "log_likelihood_k",
                "active_units", "wall_time_s"):
        assert key in metrics
    assert np.isfinite(metrics["test_loss"]) and metrics["test_loss"] < metrics["initial_test_loss"]
    # log p(x) is bounded below by the IWAE estimate, which is itself above the ELBO on average
    assert -metrics["test_log_likelihood"] < metrics["test_loss"] + 1.0
    return metrics


def test_demo_end_to_end_on_real_mnist_subset(mnist_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = demo.main(["--data-dir", str(mnist_dir), "--epochs", "1", "--train-limit", "2000", "--test-limit", "500",
                      "--eval-k", "20", "--out", str(out)])
    assert code == 0
    metrics = _outputs_ok(out, manifold=False)
    assert metrics["log_likelihood_k"] == 20 and metrics["log_likelihood_images"] == 500
    assert 0 <= metrics["active_units"] <= 20
    printed = capsys.readouterr().out
    assert "epoch   1/1" in printed and "samples/s" in printed and "test log p(x)" in printed


def test_demo_2d_latent_grey_levels(fake_mnist, tmp_path):
    out = tmp_path / "out"
    code = demo.main(["--data-dir", str(fake_mnist), "--epochs", "2", "--latent-dim", "2", "--hidden", "64", "32",
                      "--binarize", "none", "--eval-k", "10", "--out", str(out)])
    assert code == 0
    _outputs_ok(out, manifold=True)


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--likelihood", "poisson"], "argument --likelihood: invalid choice"),
    (["--lr", "-1"], "argument --lr: expected a finite number > 0, got -1"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_data_is_a_one_line_error(fake_mnist, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in fake_mnist.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    code = demo.main(["--data-dir", str(broken), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("train_mnist.py: error: ") and err.count("\n") == 1
    assert "t10k-images-idx3-ubyte.gz" in err and "Traceback" not in err


def test_resume_without_checkpoint_is_a_clear_error(fake_mnist, tmp_path, capsys):
    code = demo.main(["--data-dir", str(fake_mnist), "--out", str(tmp_path / "none"), "--resume"])
    assert code == 2
    assert "checkpoint.npz: no such file" in capsys.readouterr().err


def _run(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(DEMO), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT, **kw)


def test_ctrl_c_saves_and_resume_is_bit_for_bit(fake_mnist, tmp_path):
    """SIGINT mid-training: exit 130, checkpoint + figures + resume command; then --resume
    reaches exactly the parameters of an uninterrupted run (float64)."""
    common = ["--data-dir", str(fake_mnist), "--dtype", "float64", "--epochs", "6", "--batch-size", "32",
              "--hidden", "128", "--eval-k", "5"]
    steps = 6 * 38  # 1200 images in batches of 32; 5 epochs left after the first line: the signal lands in training
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"

    proc = _run([*common, "--out", str(interrupted)])
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("epoch   1/6"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with:" in err and "--resume" in err
    saved = load_checkpoint(interrupted / "checkpoint.npz")
    assert 38 <= saved.meta["step"] < steps  # stopped after epoch 1, before the end
    assert (interrupted / "reconstructions.png").is_file() and (interrupted / "curves.png").is_file()

    resumed = _run([*common, "--out", str(interrupted), "--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in out

    full = _run([*common, "--out", str(reference)])
    out, err = full.communicate(timeout=300)
    assert full.returncode == 0, err

    a = load_checkpoint(interrupted / "checkpoint.npz")
    b = load_checkpoint(reference / "checkpoint.npz")
    assert a.meta["step"] == b.meta["step"] == steps
    for k in b.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    for k in b.optimizer_state:
        np.testing.assert_array_equal(a.optimizer_state[k], b.optimizer_state[k], err_msg=k)
    ma = json.loads((interrupted / "metrics.json").read_text())
    mb = json.loads((reference / "metrics.json").read_text())
    assert ma["test_loss"] == mb["test_loss"] and ma["test_log_likelihood"] == mb["test_log_likelihood"]
