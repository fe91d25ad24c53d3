"""Nothing overwritten (issue #21, items 1 and 4): --out is guarded, every write goes through an
unpredictable temporary, stale temporaries are removed, and what a run needs at its end is
checked at its start.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, write_fake_mnist

from demos import train_mnist as demo
from npvae import checkpoint as ck


def _flags(data_dir, out, *extra):
    return ["--data-dir", str(data_dir), "--out", str(out), "--hidden", "16", "--latent-dim", "3",
            "--batch-size", "50", "--eval-k", "2", "--dtype", "float64", "--epochs", "1", *extra]


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    assert demo.main(_flags(tiny_mnist, out, "--epochs", "2")) == 0
    return out



def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------------
# another run's checkpoint, a second run at the same time
# ----------------------------------------------------------------------------------------------
def test_a_new_run_refuses_a_folder_with_another_runs_checkpoint(trained, tiny_mnist, tmp_path, capsys, no_data):
    out = shutil.copytree(trained, tmp_path / "out")
    before = (out / "checkpoint.npz").read_bytes()
    assert demo.main(_flags(tiny_mnist, out, "--model", "ae")) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"--out {out}: expected a folder without another run's checkpoint, got {out / 'checkpoint.npz'}" in err
    assert "--resume" in err and "--overwrite" in err
    assert (out / "checkpoint.npz").read_bytes() == before


def test_overwrite_replaces_the_previous_run_and_its_figures(trained, tiny_mnist, tmp_path, capsys):
    out = shutil.copytree(trained, tmp_path / "out")
    (out / "manifold.png").write_bytes(b"an old figure this run does not draw")
    (out / "notes.txt").write_text("mine")
    assert demo.main(_flags(tiny_mnist, out, "--overwrite")) == 0
    assert "--overwrite: removed the previous run's checkpoint.npz" in capsys.readouterr().out
    assert ck.load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 1
    assert not (out / "manifold.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert demo.main(_flags(tiny_mnist, out, "--overwrite", "--resume")) == 2
    assert "--overwrite: expected it only for a new run, got it with --resume" in capsys.readouterr().err


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_pid(tmp_path, capsys, no_data):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from npvae.checkpoint import lock_folder; "
                               f"lock_folder({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert demo.main(["--out", str(out)]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert f"--out {out}: expected a folder no other run is using, got one locked by the run with pid " \
               f"{holder.pid} (still running)" in err
    finally:
        holder.kill()
        holder.wait()


def test_empty_out_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--out", ""])
    assert info.value.code == 2
    assert "argument --out: expected a folder path, got ''" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# temporaries: unpredictable names, planted symlinks never followed, stale ones removed
# ----------------------------------------------------------------------------------------------
def test_planted_symlinks_are_never_followed(tiny_mnist, tmp_path):
    out, victims = tmp_path / "shared", tmp_path / "victims"
    out.mkdir()
    victims.mkdir()
    pid = os.getpid()
    names = [f".checkpoint.npz.tmp-{pid}", f".metrics.json.tmp-{pid}", f".samples.png.tmp-{pid}",
             f".npvae-write-test-{pid}", ck.LOCK_NAME]
    for i, name in enumerate(names[:-1]):
        (victims / f"v{i}").write_text("precious")
        (out / name).symlink_to(victims / f"v{i}")
    assert demo.main(_flags(tiny_mnist, out)) == 0
    assert all((victims / f"v{i}").read_text() == "precious" for i in range(len(names) - 1))
    # the lock file itself, planted as a symlink, is refused (O_NOFOLLOW)
    (victims / "lock").write_text("precious")
    other = tmp_path / "other"
    other.mkdir()
    (other / ck.LOCK_NAME).symlink_to(victims / "lock")
    with pytest.raises(OSError):
        ck.lock_folder(other)
    assert (victims / "lock").read_text() == "precious"


def test_atomic_write_uses_an_unpredictable_exclusive_name(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    ck.atomic_write(tmp_path / "a.json", lambda f: f.write(b"1"))
    ck.atomic_write(tmp_path / "a.json", lambda f: f.write(b"2"))
    assert seen[0] != seen[1] and all(s.startswith(f".a.json.tmp-{os.getpid()}-") for s in seen)
    assert (tmp_path / "a.json").read_bytes() == b"2" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_stale_temporaries_of_dead_runs_are_removed(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead, alive = _dead_pid(), os.getppid()
    stale = [f".checkpoint.npz.tmp-{dead}", f".samples.png.tmp-{dead}-k2j4x", f".npvae-write-test-{dead}"]
    for name in stale:
        (out / name).write_bytes(b"\0" * 1000)
    (out / f".metrics.json.tmp-{alive}").write_bytes(b"a live writer's")
    (out / ".hidden-notes").write_text("mine")
    assert demo.main(_flags(tiny_mnist, out)) == 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert left == sorted([ck.LOCK_NAME, f".metrics.json.tmp-{alive}", ".hidden-notes"])


# ----------------------------------------------------------------------------------------------
# what the end of a run needs is checked at its start
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--test-limit", "1"], "--test-limit: expected at least 2 test images (latent.png plots their codes"),
    (["--sigma-x", "0.5"], "--sigma-x 0.5: the bernoulli likelihood has no sigma_x; expected it only with "
                           "--likelihood gaussian or gaussian_learned"),
    (["--eval-k", "10000000000"], "--eval-k: expected an integer <= "),
    (["--model", "iwae", "--beta", "2"], "--beta: the iwae model's objective has no beta"),
])
def test_run_end_needs_are_checked_before_the_data(argv, message, tmp_path, capsys, no_data):
    assert demo.main(["--out", str(tmp_path / "o"), *argv]) == 2
    assert message in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("argv,message", [
    (["--likelihood", "gaussian", "--sigma-x", "1e200"], "argument --sigma-x: expected a number in [1e-06, 1e+06], "
                                                         "got 1e200"),
    (["--model", "dirichlet", "--alpha", "1e-300"], "argument --alpha: expected a number in [1e-30, 1e+30], "
                                                    "got 1e-300"),
])
def test_values_that_break_the_numerics_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_a_test_set_too_small_for_the_figures_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    data = write_fake_mnist(tmp_path / "one", 50, 1)
    assert demo.main(_flags(data, tmp_path / "o")) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "the test set in" in err and "expected at least 2 test images" in err and "got 1" in err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_eval_k_for_a_model_without_likelihood_is_reported(tiny_mnist, tmp_path, capsys):
    assert demo.main(_flags(tiny_mnist, tmp_path / "o", "--model", "ae")) == 0
    assert "--eval-k 2: ignored, the ae model has no likelihood p(x) to estimate" in capsys.readouterr().out


def test_a_figure_failing_after_training_keeps_checkpoint_and_metrics(tiny_mnist, tmp_path, capsys, monkeypatch):
    from npvae import plots

    def broken(*args, **kwargs):
        raise ValueError("mu: expected finite values, got 3 NaN")
    monkeypatch.setattr(plots, "plot_latent", broken)
    out = tmp_path / "o"
    assert demo.main(_flags(tiny_mnist, out)) == 1
    captured = capsys.readouterr()
    err = one_line_error(captured.err)
    assert "could not draw the figures after training (ValueError: mu: expected finite values" in err
    assert f"the checkpoint {out / 'checkpoint.npz'} and {out / 'metrics.json'} are kept" in err
    assert "test -ELBO" in captured.out  # the run's numbers are printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["test_neg_elbo"]) and ck.load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 1


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    """mkstemp's private 0600 is not kept: the result has 0666 minus the umask, like open(path, 'w')."""
    import os

    from npvae.checkpoint import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
        (tmp_path / "b.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
