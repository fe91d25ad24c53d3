"""Training loop and checkpoints: exact resume, fault handling, atomic writes, no pickle."""

import json
import zipfile

import numpy as np
import pytest

from npvae import checkpoint as ck
from npvae.optim import Adam
from npvae.train import NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted
from npvae.models import VAE
from helpers import fake_images


def make_trainer(tmp_path=None, *, dtype=np.float64, epochs=2, binarize="dynamic", n=300, name="ck.npz", **cfg):
    model = VAE(64, 3, (16,), rng=np.random.default_rng(0), dtype=dtype)
    config = TrainConfig(epochs=epochs, batch_size=32, binarize=binarize, seed=3, **cfg)
    return Trainer(model, Adam(model.params, lr=1e-2), fake_images(n), fake_images(100, seed=1), config,
                   rng=np.random.default_rng(7), checkpoint_path=(tmp_path / name) if tmp_path else None,
                   log=None)


def params_of(trainer):
    return {k: v.copy() for k, v in trainer.model.params.items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("binarize", ["dynamic", "static", "none"])
def test_training_lowers_the_test_loss(binarize):
    t = make_trainer(epochs=3, binarize=binarize)
    history = t.fit()
    assert len(history) == 3 and t.epoch == 3 and t.step == 3 * 10
    assert history[-1]["test_loss"] < 0.93 * t.initial_test_loss
    for h in history:
        assert np.isclose(h["train_loss"], h["train_reconstruction"] + h["train_kl"])
        assert np.isclose(h["test_loss"], h["test_reconstruction"] + h["test_kl"])
        assert h["samples_per_s"] > 0


def test_resume_between_epochs_is_exact(tmp_path):
    full = make_trainer(tmp_path, epochs=3, name="full.npz")
    full.fit()
    first = make_trainer(tmp_path, epochs=1)
    first.fit()
    second = make_trainer(tmp_path, epochs=3)
    second.load(tmp_path / "ck.npz")
    assert second.epoch == 1 and second.step == 10
    second.fit()
    assert_same_params(params_of(full), params_of(second))
    for a, b in zip(full.history, second.history):
        assert {k: v for k, v in a.items() if k not in ("seconds", "samples_per_s")} == \
               {k: v for k, v in b.items() if k not in ("seconds", "samples_per_s")}
    # the optimizer state matches too
    sa, sb = full.optimizer.state_dict(), second.optimizer.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_interrupt_mid_epoch_saves_the_step_and_resumes_exactly(tmp_path):
    full = make_trainer(tmp_path, epochs=2, name="full.npz")
    full.fit()
    t = make_trainer(tmp_path, epochs=2)
    real_step = t.optimizer.step

    def step_then_interrupt(grads):  # what the SIGINT handler does, at a chosen step
        real_step(grads)
        if t.step == 13:  # epoch 2, batch 4 is under way
            t._interrupted = True

    t.optimizer.step = step_then_interrupt
    with pytest.raises(TrainingInterrupted, match="interrupted after epoch 2, batch 4; checkpoint saved") as info:
        t.fit()
    assert info.value.checkpoint == tmp_path / "ck.npz"
    saved = ck.load_checkpoint(tmp_path / "ck.npz")
    assert saved.meta["step"] == 14 and saved.meta["batch"] == 4 and saved.meta["epoch"] == 1
    assert "perm" in saved.arrays
    resumed = make_trainer(tmp_path, epochs=2)
    resumed.load(tmp_path / "ck.npz")
    resumed.fit()
    assert_same_params(params_of(full), params_of(resumed))
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]


def test_interrupt_during_evaluation_stops_after_the_epoch(tmp_path):
    """Ctrl-C while the test set is evaluated is not swallowed: training stops after that epoch."""
    t = make_trainer(tmp_path, epochs=3)
    real_evaluate = t.evaluate

    def evaluate_then_interrupt(images=None):
        if t.step == 10:  # the end of epoch 1 (the initial evaluation runs at step 0)
            t._interrupted = True
        return real_evaluate(images)

    t.evaluate = evaluate_then_interrupt
    with pytest.raises(TrainingInterrupted, match="interrupted after epoch 1, batch 10"):
        t.fit()
    saved = ck.load_checkpoint(tmp_path / "ck.npz")
    assert saved.meta["epoch"] == 1 and saved.meta["step"] == 10 and len(saved.meta["history"]) == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = make_trainer(tmp_path, epochs=3)
    real_forward = t.model.forward

    def forward(x, **kw):
        terms = real_forward(x, **kw)
        if t.epoch == 1 and t._batch == 2 and kw.get("rng") is t.rng:  # a training step, not the evaluation
            terms.loss = float("nan")
        return terms

    t.model.forward = forward
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, batch 3.*last good checkpoint is") as info:
        t.fit()
    assert (info.value.epoch, info.value.batch) == (2, 3)
    saved = ck.load_checkpoint(tmp_path / "ck.npz")
    assert saved.meta["epoch"] == 1 and saved.meta["batch"] == 0  # the end of epoch 1, untouched
    for k, v in saved.params.items():
        assert np.isfinite(v).all()


def test_nan_weights_after_the_last_step_are_not_checkpointed(tmp_path):
    t = make_trainer(tmp_path, epochs=1)
    real_step = t.optimizer.step

    def poison(grads):
        real_step(grads)
        if t._batch == t.steps_per_epoch - 1:  # the epoch's last step
            t.model.params["decoder.0.b"][0] = np.nan

    t.optimizer.step = poison
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 10"):
        t.fit()
    assert not (tmp_path / "ck.npz").exists()


def test_kl_warmup_schedule():
    t = make_trainer(epochs=2, warmup_epochs=1.0, beta=2.0)
    assert t.steps_per_epoch == 10
    assert t.beta_at(0) == pytest.approx(0.2)
    assert t.beta_at(4) == pytest.approx(1.0)
    assert t.beta_at(9) == 2.0 and t.beta_at(50) == 2.0
    assert make_trainer(epochs=1).beta_at(0) == 1.0


def test_evaluation_does_not_touch_the_training_stream():
    t = make_trainer()
    state = json.dumps(t.rng.bit_generator.state)
    a = t.evaluate()
    b = t.evaluate()
    assert a == b
    assert json.dumps(t.rng.bit_generator.state) == state


def test_trainer_argument_errors():
    model = VAE(64, 3, (16,), rng=np.random.default_rng(0))
    opt = Adam(model.params)
    imgs = fake_images(50)
    with pytest.raises(TypeError, match="train_images: expected a uint8 array"):
        Trainer(model, opt, imgs.astype(np.float32), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="train_images: expected 64 pixels per image"):
        Trainer(model, opt, fake_images(50, side=5), rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        Trainer(model, opt, imgs, rng=0)
    with pytest.raises(TypeError, match="optimizer: expected an npvae.optim Optimizer"):
        Trainer(model, object(), imgs, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="beta: expected a number >= 0.0, got -0.5"):
        TrainConfig(beta=-0.5)
    with pytest.raises(ValueError, match="binarize: expected one of"):
        TrainConfig(binarize="otsu")


# ----------------------------------------------------------------------------------------
# checkpoint files
# ----------------------------------------------------------------------------------------

def test_checkpoint_round_trip_without_pickle(tmp_path):
    t = make_trainer(tmp_path, epochs=1)
    t.fit()
    path = tmp_path / "ck.npz"
    with np.load(path, allow_pickle=False) as npz:  # every entry loads without pickle
        assert all(npz[k].dtype != object for k in npz.files)
        meta = json.loads(str(npz["__meta__"]))
    assert meta["format_version"] == ck.FORMAT_VERSION and meta["kind"] == "npvae-checkpoint"
    saved = ck.load_checkpoint(path)
    assert_same_params(saved.params, t.model.params)
    assert saved.meta["model_config"] == t.model.config
    assert int(saved.optimizer_state["t"]) == 10


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    t = make_trainer(tmp_path, epochs=1)
    t.fit()
    path = tmp_path / "ck.npz"
    raw = path.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"checkpoint .*bad.npz: the file is corrupted"):
        ck.load_checkpoint(bad)
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"expected an .npz \(zip\) archive, got a file starting with b'not '"):
        ck.load_checkpoint(bad)
    np.savez(bad, weights=np.zeros(3))
    with pytest.raises(ValueError, match="without '__meta__'"):
        ck.load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ck.load_checkpoint(tmp_path / "missing.npz")


def test_checkpoint_from_a_newer_format_is_refused(tmp_path):
    path = ck.save_checkpoint(tmp_path / "c.npz", params={"w": np.zeros(2)}, meta={})
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    meta = {"format_version": ck.FORMAT_VERSION + 1, "kind": "npvae-checkpoint"}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **{"param/w": np.zeros(2)})
    with pytest.raises(ValueError, match=f"expected format_version 1..{ck.FORMAT_VERSION}, got {ck.FORMAT_VERSION + 1}"):
        ck.load_checkpoint(path)
    assert entries  # the original was a real zip archive


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    t = make_trainer(tmp_path, epochs=1)
    t.fit()
    other = VAE(64, 4, (16,), rng=np.random.default_rng(0), dtype=np.float64)
    other_t = Trainer(other, Adam(other.params), fake_images(300), rng=np.random.default_rng(0), log=None)
    with pytest.raises(ValueError, match="expected a checkpoint of this model"):
        other_t.load(tmp_path / "ck.npz")
    saved = ck.load_checkpoint(tmp_path / "ck.npz")
    with pytest.raises(ValueError, match=r"parameter 'encoder.2.W': expected shape \(16, 8\), got \(16, 6\)"):
        ck.restore_params(other.params, saved.params)
    before = params_of(other_t)
    assert_same_params(before, other.params)  # nothing was copied


def test_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = ck.save_checkpoint(tmp_path / "c.npz", params={"w": np.arange(3.0)}, meta={"epoch": 1})
    good = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, params={"w": np.zeros(3)}, meta={"epoch": 2})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left behind
    assert ck.load_checkpoint(path).meta["epoch"] == 1


def test_save_rejects_object_arrays_and_unserialisable_meta(tmp_path):
    with pytest.raises(TypeError, match="expected a non-object array"):
        ck.save_checkpoint(tmp_path / "c.npz", params={"w": np.array([None, 1])}, meta={})
    with pytest.raises(TypeError, match="meta: expected a JSON-serialisable dict"):
        ck.save_checkpoint(tmp_path / "c.npz", params={}, meta={"f": object()})
    assert not any(tmp_path.iterdir())
