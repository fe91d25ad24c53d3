"""Checkpoints are validated as data, not trusted (issue #21, item 5), and resume refuses other settings.

Each test tampers with a real checkpoint of a 1-epoch demo run the way a hostile or
careless user could (a missing meta key, a nested JSON bomb, a shuffled order that is not a
permutation, counters out of range, a duplicate zip member, NaN weights, a config value of
the wrong type) and checks the one-line error (exit code 2) the demo gives instead of a
traceback or a run on nonsense.
"""

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error

from benchmarks import reproduce_iwae
from demos import train_mnist as demo
from npvae import checkpoint as ck
from npvae.models import VAE
from npvae.optim import Adam
from npvae.train import TrainConfig, Trainer
from helpers import fake_images


def _flags(data_dir, out, *extra):
    return ["--data-dir", str(data_dir), "--out", str(out), "--hidden", "16", "--latent-dim", "3",
            "--batch-size", "50", "--eval-k", "2", "--dtype", "float64", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    assert demo.main(_flags(tiny_mnist, out, "--epochs", "1")) == 0
    return out


def _entries(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def tamper(trained: Path, tmp_path: Path, *, meta=None, drop=(), **arrays) -> Path:
    """A copy of the trained run's folder whose checkpoint has ``meta`` changed (a function of the dict),
    the entries ``drop`` removed and ``arrays`` (``param_x=...`` for "param/x") replaced."""
    out = tmp_path / "out"
    out.mkdir()
    entries = _entries(trained / "checkpoint.npz")
    m = json.loads(str(entries["__meta__"]))
    if meta is not None:
        m = meta(m) or m
    entries["__meta__"] = np.array(m if isinstance(m, str) else json.dumps(m))
    for key in drop:
        entries.pop(key)
    for key, value in arrays.items():
        entries[key.replace("_", "/", 1)] = value
    np.savez(out / "checkpoint.npz", **entries)
    return out



def _resume(tiny_mnist, out, capsys, *extra) -> str:
    code = demo.main(["--data-dir", str(tiny_mnist), "--out", str(out), "--eval-k", "2", "--epochs", "2",
                      "--resume", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_line_error(err)


@pytest.mark.parametrize("key", ["epoch", "model_config", "rng_state", "history", "train_config", "step", "batch"])
def test_a_missing_meta_key_is_named(trained, tiny_mnist, tmp_path, capsys, key):
    out = tamper(trained, tmp_path, meta=lambda m: m.pop(key) and None)
    assert f"expected the meta key {key!r}, got a checkpoint without it" in _resume(tiny_mnist, out, capsys)


@pytest.mark.parametrize("key,value,message", [
    ("epoch", -5, "meta 'epoch': expected an integer >= 0, got -5"),
    ("epoch", "1", "meta 'epoch': expected an integer >= 0, got str"),
    ("history", {"a": 1}, "meta 'history': expected a list, got dict"),
    ("rng_state", [1, 2], "meta 'rng_state': expected a dict, got list"),
    ("seconds", float("nan"), "meta 'seconds': expected a number >= 0, got nan"),
])
def test_meta_values_of_the_wrong_type_or_range(trained, tiny_mnist, tmp_path, capsys, key, value, message):
    out = tamper(trained, tmp_path, meta=lambda m: m.update({key: value}))
    assert message in _resume(tiny_mnist, out, capsys)


def test_epoch_and_history_must_agree(trained, tiny_mnist, tmp_path, capsys):
    out = tamper(trained, tmp_path, meta=lambda m: m.update(epoch=3, step=18))
    assert "meta 'history': expected 3 dicts (one per completed epoch" in _resume(tiny_mnist, out, capsys)


def test_a_batch_counter_beyond_the_epoch_is_refused(trained, tiny_mnist, tmp_path, capsys):
    out = tamper(trained, tmp_path, meta=lambda m: m.update(batch=10 ** 6, step=10 ** 6 + 6))
    err = _resume(tiny_mnist, out, capsys)
    assert "expected a batch counter within the epoch (0..6)" in err and "batch 1000000" in err


@pytest.mark.parametrize("perm,message", [
    (np.zeros(300, dtype=np.int64), "expected the epoch's order to be a permutation of 0..299"),
    (np.arange(300, dtype=np.int64) + 5, "expected the epoch's order to be a permutation of 0..299"),
    (np.arange(300, dtype=np.float64), "expected 1-d integer array"),
])
def test_a_stored_order_must_be_a_permutation(trained, tiny_mnist, tmp_path, capsys, perm, message):
    out = tamper(trained, tmp_path, meta=lambda m: m.update(batch=2, step=8), array_perm=perm)
    err = _resume(tiny_mnist, out, capsys)
    assert message.replace("expected 1-d", "expected a 1-d") in err


def test_deeply_nested_json_is_refused(trained, tiny_mnist, tmp_path, capsys):
    bomb = '{"kind": "npvae-checkpoint", "format_version": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    out = tamper(trained, tmp_path, meta=lambda m: bomb)
    assert "expected JSON metadata, got JSON nested too deeply to read" in _resume(tiny_mnist, out, capsys)


def test_missing_optimizer_entries_are_named(trained, tiny_mnist, tmp_path, capsys):
    out = tamper(trained, tmp_path, drop=("optim/lr", "optim/m.encoder.0.W"))
    err = _resume(tiny_mnist, out, capsys)
    assert "expected the Adam state of this model (21 entries), got 2 missing ('lr', 'm.encoder.0.W')" in err


def test_a_duplicate_member_is_refused(trained, tiny_mnist, tmp_path, capsys):
    out = tamper(trained, tmp_path)
    with zipfile.ZipFile(out / "checkpoint.npz", "a") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        buf = __import__("io").BytesIO()
        np.save(buf, np.zeros((784, 16)))
        z.writestr("param/encoder.0.W.npy", buf.getvalue())
    assert "expected each entry once, got 'param/encoder.0.W.npy' twice" in _resume(tiny_mnist, out, capsys)


def test_nan_weights_are_refused_and_not_called_good(trained, tiny_mnist, tmp_path, capsys):
    entries = _entries(trained / "checkpoint.npz")
    entries["param/decoder.0.b"][0] = np.nan
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "checkpoint.npz", **entries)
    err = _resume(tiny_mnist, out, capsys)
    assert "parameter 'decoder.0.b': expected finite values, got 1 NaN or inf" in err and "good" not in err
    # nothing left to train: still refused, never evaluated on NaN weights
    code = demo.main(["--data-dir", str(tiny_mnist), "--out", str(out), "--eval-k", "2", "--resume"])
    assert code == 2 and "expected finite values" in capsys.readouterr().err


def test_a_config_value_of_the_wrong_type_is_refused(trained, tiny_mnist, tmp_path, capsys):
    out = tamper(trained, tmp_path, meta=lambda m: m["model_config"].update(per_pixel_sigma="no"))
    assert "model_config 'per_pixel_sigma': expected true or false, got str no" in _resume(tiny_mnist, out, capsys)


def test_an_unknown_member_refuses_the_file_unread(trained, tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "checkpoint.npz", **_entries(trained / "checkpoint.npz"), junk=np.zeros(3))
    assert "expected entries named __meta__, param/..., optim/..., array/perm, got 'junk.npy'" in \
        _resume(tiny_mnist, out, capsys)


# ----------------------------------------------------------------------------------------------
# on resume, the data settings are the checkpoint's
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--dataset", "fashion-mnist"], "--dataset fashion-mnist (checkpoint: mnist)"),
    (["--train-limit", "200"], "--train-limit 200 (checkpoint: none)"),
    (["--batch-size", "20"], "--batch-size 20 (checkpoint: 50)"),
    (["--seed", "4"], "--seed 4 (checkpoint: 3)"),
])
def test_resume_refuses_other_data_settings(trained, tiny_mnist, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    __import__("shutil").copytree(trained, out)
    err = _resume(tiny_mnist, out, capsys, *flags)
    assert "--resume: the checkpoint fixes these" in err and message in err


def test_resume_takes_the_checkpoints_dataset_and_limit(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(_flags(tiny_mnist, out, "--epochs", "1", "--train-limit", "200")) == 0
    assert demo.main(["--data-dir", str(tiny_mnist), "--out", str(out), "--eval-k", "2", "--epochs", "2",
                      "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist" and ck.load_checkpoint(out / "checkpoint.npz").meta["train_images"] == 200


def test_trainer_refuses_other_training_settings_and_images(tmp_path):
    def trainer(batch_size=32, seed=3, n=300):
        model = VAE(64, 3, (16,), rng=np.random.default_rng(0), dtype=np.float64)
        return Trainer(model, Adam(model.params, lr=1e-2), fake_images(n), None,
                       TrainConfig(epochs=1, batch_size=batch_size, seed=seed), rng=np.random.default_rng(7),
                       checkpoint_path=tmp_path / "c.npz", log=None)
    trainer().fit()
    with pytest.raises(ValueError, match=r"expected the training settings it was written with, got batch_size 20 "
                                         r"\(checkpoint: 32\)"):
        trainer(batch_size=20).load(tmp_path / "c.npz")
    with pytest.raises(ValueError, match=r"seed 4 \(checkpoint: 3\)"):
        trainer(seed=4).load(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="expected 300 training images .*got 200"):
        trainer(n=200).load(tmp_path / "c.npz")


def test_an_optimizer_of_another_model_is_refused():
    model = VAE(64, 3, (16,), rng=np.random.default_rng(0))
    other = VAE(64, 3, (16,), rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="optimizer: expected an optimizer built on this model's parameters"):
        Trainer(model, Adam(other.params), fake_images(50), rng=np.random.default_rng(0))


def test_reproduce_iwae_refuses_another_batch_size_or_seed_on_resume(fake_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(fake_mnist))
    base = ["--model", "vae", "--epochs", "8", "--train-limit", "200", "--test-limit", "20", "--eval-k", "2",
            "--quiet", "--out", str(tmp_path)]
    run_dir = tmp_path / "vae"
    run_dir.mkdir()
    # a run stopped after its plan and first checkpoint: train one epoch by hand, as train() would
    args = reproduce_iwae.build_parser().parse_args(base + ["--batch-size", "20"])
    train_x, _ = __import__("npvae").data.load_mnist("train")
    test_x, _ = __import__("npvae").data.load_mnist("test")
    _, trainer = reproduce_iwae.build(args, "vae", train_x[:200], test_x[:20], run_dir)
    trainer.fit()
    ck.atomic_write(run_dir / "plan.json", lambda f: f.write(json.dumps({"stages": [1] * 8,
                                                                        "budget_minutes": None}).encode()))
    before = (run_dir / "checkpoint.npz").read_bytes()
    for flags, message in ((["--batch-size", "40"], "batch_size 40 (checkpoint: 20)"),
                           (["--seed", "5"], "seed 5 (checkpoint: 0)")):
        assert reproduce_iwae.main(base + flags) == 2
        err = capsys.readouterr().err
        assert err.startswith("reproduce_iwae.py: error: ") and err.count("\n") == 1 and message in err, err
    assert (run_dir / "checkpoint.npz").read_bytes() == before
