"""demos/train_mnist.py end to end: outputs, errors, Ctrl-C and exact resume."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from demos import train_mnist as demo  # the repository root is on pytest's pythonpath
from npvae.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "train_mnist.py"


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--hidden", "--latent-dim", "--likelihood", "--binarize",
                 "--beta", "--seed", "--dataset", "--data-dir", "--out", "--resume", "--eval-k", "--dtype",
                 "--model", "gaussian_learned", "--compare"):
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
    for key in ("test_neg_elbo", "test_reconstruction", "test_kl", "test_log_likelihood", "log_likelihood_k",
                "active_units", "wall_time_s"):
        assert key in metrics
    assert "test_loss" not in metrics and metrics["objective"] == "neg_elbo"  # the objective is named
    assert np.isfinite(metrics["test_neg_elbo"]) and metrics["test_neg_elbo"] < metrics["initial_test_neg_elbo"]
    # log p(x) is bounded below by the IWAE estimate, which is itself above the ELBO on average
    assert -metrics["test_log_likelihood"] < metrics["test_neg_elbo"] + 1.0
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
    assert "test -ELBO" in printed


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
    assert ma["test_neg_elbo"] == mb["test_neg_elbo"] and ma["test_log_likelihood"] == mb["test_log_likelihood"]


# ----------------------------------------------------------------------------------------------
# every model the demo can train (issue #9, item 4)
# ----------------------------------------------------------------------------------------------
from npvae.models import MODELS  # noqa: E402

MODEL_FIGURES = {  # the figures that fit each model, beyond reconstructions, curves and latent
    "vae": ["samples.png", "interpolation.png", "manifold.png"],
    "ae": ["samples.png", "interpolation.png", "manifold.png"],
    "cvae": ["class_samples.png", "same_z.png"],
    "dirichlet": ["samples.png", "interpolation.png", "manifold.png", "theta_by_class.png"],
    "iwae": ["samples.png", "interpolation.png", "manifold.png"],
    "flow": ["samples.png", "interpolation.png", "manifold.png"],
    "hvae": ["samples.png", "interpolation.png", "manifold.png"],
    "vamp": ["samples.png", "interpolation.png", "manifold.png", "pseudo_inputs.png"],
}
OBJECTIVE = {"vae": "neg_elbo", "ae": "neg_log_likelihood", "cvae": "neg_elbo", "dirichlet": "neg_elbo",
             "iwae": "neg_iwae_bound", "flow": "neg_elbo", "hvae": "neg_elbo", "vamp": "neg_elbo"}
EXTRA = {"vamp": ["--n-pseudo", "5"], "hvae": ["--top-latent-dim", "2", "--top-hidden", "8"]}


def _tiny(kind, data_dir, out, *extra):
    return demo.main(["--model", kind, "--data-dir", str(data_dir), "--out", str(out), "--epochs", "1",
                      "--train-limit", "300", "--test-limit", "100", "--hidden", "32", "--latent-dim", "2",
                      "--batch-size", "50", "--eval-k", "3", *extra])


@pytest.mark.parametrize("kind", sorted(MODEL_FIGURES))
def test_every_model_trains_and_draws_its_figures(kind, fake_mnist, tmp_path, capsys):
    if kind not in MODELS:
        pytest.skip(f"npvae.models has no {kind!r} model yet (issue #9 adds it)")
    out = tmp_path / kind
    assert _tiny(kind, fake_mnist, out, *EXTRA.get(kind, [])) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    names = ["reconstructions.png", "curves.png", "latent.png", *MODEL_FIGURES[kind]]
    assert sorted(metrics["figures"]) == sorted(names)
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and 1000 < len(data) < 300_000, name
    loss = OBJECTIVE[kind]
    assert metrics["objective"] == loss and metrics["model_kind"] == kind and "test_loss" not in metrics
    assert np.isfinite(metrics[f"test_{loss}"]) and metrics[f"test_{loss}"] < metrics[f"initial_test_{loss}"]
    assert all(f"train_{loss}" in h and f"test_{loss}" in h for h in metrics["history"])
    printed = capsys.readouterr().out
    if kind == "ae":  # no prior, no p(x)
        assert metrics["test_log_likelihood"] is None and "no log p(x)" in printed
        assert "test -log p(x|z) (reconstruction)" in printed
    else:
        assert np.isfinite(metrics["test_log_likelihood"])
        assert ("test -IWAE bound" if kind == "iwae" else "test -ELBO") in printed
        assert metrics["log_likelihood_of"] == ("log p(x|y)" if kind == "cvae" else "log p(x)")
    if kind == "hvae":  # two stochastic layers: Burda et al.'s active units counted per layer
        assert len(metrics["active_units_per_layer"]) == 2 and "active units: z1 " in printed
        assert metrics["model"]["z_dims"] == [2, 2] and metrics["model"]["k"] == 1


def test_ae_next_to_a_vae_and_learned_sigma(fake_mnist, tmp_path):
    """--compare draws an AE and a VAE side by side; --likelihood gaussian_learned is reachable."""
    if "ae" not in MODELS:
        pytest.skip("npvae.models has no 'ae' model yet (issue #9 adds it)")
    vae = tmp_path / "vae"
    assert _tiny("vae", fake_mnist, vae, "--likelihood", "gaussian_learned", "--binarize", "none") == 0
    assert json.loads((vae / "metrics.json").read_text())["model"]["likelihood"] == "gaussian_learned"
    ae = tmp_path / "ae"
    assert _tiny("ae", fake_mnist, ae, "--compare", str(vae)) == 0
    for name in ("compare_samples.png", "compare_latent.png"):
        assert 1000 < len((ae / name).read_bytes()) < 300_000
    if "cvae" in MODELS:  # refused before any training
        assert _tiny("cvae", fake_mnist, tmp_path / "c", "--compare", str(vae)) == 2
        assert not (tmp_path / "c").exists()


def test_model_options_are_refused_for_other_models(capsys):
    if "alpha" not in demo.MODEL_OPTIONS or not any(demo._accepts(k, "alpha") for k in MODELS):
        pytest.skip("no model takes --alpha yet (the Dirichlet VAE of issue #9 adds it)")
    assert demo.main(["--model", "vae", "--alpha", "0.5"]) == 2
    assert "--alpha: the vae model has no alpha; expected it only with --model dirichlet" in capsys.readouterr().err
