"""demos/train_mnist.py loses nothing (issue #13): --out is checked before any work, --resume
refuses the flags the checkpoint fixes, and a failed write (disk full) keeps the last checkpoint.

Every failure is simulated in-process (a file where the folder should be, a patched
``os.open``/``os.write``/``np.savez``/PIL save raising PermissionError or ENOSPC): the tests
run as root here, so a real permission error cannot be produced.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import one_line_error

from demos import train_mnist as demo  # the repository root is on pytest's pythonpath
from npvae.checkpoint import load_checkpoint

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _flags(data_dir, out, *extra):
    return ["--data-dir", str(data_dir), "--out", str(out), "--hidden", "16", "--latent-dim", "3",
            "--batch-size", "50", "--eval-k", "2", "--dtype", "float64", *extra]


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    """A results folder after a 1-epoch run (checkpoint, metrics, figures)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    assert demo.main(_flags(tiny_mnist, out, "--epochs", "1", "--seed", "3")) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# 1. --out is checked before the data is loaded
# ----------------------------------------------------------------------------------------------
def test_out_is_an_existing_file(tmp_path, capsys, no_data):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    assert demo.main(["--out", str(target)]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"--out {target}: expected a folder, got an existing file" in err and "choose another --out" in err
    assert target.read_text() == "precious"


def test_out_under_a_file(tmp_path, capsys, no_data):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert demo.main(["--out", str(blocker / "sub" / "results")]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "--out " in err and f"under the file {blocker}" in err


@pytest.mark.parametrize("patched,exc,expected", [
    ("open", PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "(EACCES); choose a folder you can write to"),
    ("write", ENOSPC, "No space left on device (ENOSPC); free some space"),
])
def test_out_not_writable(tmp_path, capsys, monkeypatch, no_data, patched, exc, expected):
    real = getattr(os, patched)
    out = tmp_path / "a" / "b"

    def failing(first, *args, **kwargs):
        if patched == "write" or str(out) in str(first):
            raise exc
        return real(first, *args, **kwargs)
    monkeypatch.setattr(os, patched, failing)
    code = demo.main(["--out", str(out)])
    monkeypatch.undo()
    assert code == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"--out {out}: expected a folder that can be written" in err and expected in err
    assert list(out.iterdir()) == [], "the probe file was left behind"


# ----------------------------------------------------------------------------------------------
# 2. --resume refuses what the checkpoint fixes; --epochs extends or there is nothing to train
# ----------------------------------------------------------------------------------------------
def test_resume_refuses_flags_the_checkpoint_fixes(trained, tmp_path, capsys, no_data):
    out = _copy(trained, tmp_path / "out")
    before = (out / "checkpoint.npz").read_bytes()
    code = demo.main(["--out", str(out), "--resume", "--latent-dim", "7", "--hidden", "32", "32",
                      "--batch-size", "50", "--lr", "0.01", "--likelihood", "gaussian", "--seed", "3", "--beta", "2"])
    assert code == 2
    err = one_line_error(capsys.readouterr().err)
    assert ("--resume: the checkpoint fixes these; drop them or start a new run: --latent-dim 7 (checkpoint: 3), "
            "--hidden 32 32 (checkpoint: 16), --likelihood gaussian (checkpoint: bernoulli), --beta 2 (checkpoint: 1), "
            "--lr 0.01 (checkpoint: 0.001)") in err
    assert "--batch-size" not in err and "--seed" not in err  # same values as the checkpoint's: accepted
    assert (out / "checkpoint.npz").read_bytes() == before


def test_resume_with_the_same_flags_trains_on(trained, tiny_mnist, tmp_path, capsys):
    out = _copy(trained, tmp_path / "out")
    assert demo.main([*_flags(tiny_mnist, out, "--seed", "3"), "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 2
    assert "resumed from" in capsys.readouterr().out


def test_resume_with_nothing_to_train_evaluates(trained, tiny_mnist, tmp_path, capsys):
    out = _copy(trained, tmp_path / "out")
    (out / "metrics.json").unlink()
    (out / "samples.png").unlink()
    before = (out / "checkpoint.npz").read_bytes()
    assert demo.main(["--data-dir", str(tiny_mnist), "--out", str(out), "--eval-k", "2", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "--epochs 1: nothing to train, the checkpoint" in printed and "pass --epochs 2 or more" in printed
    assert "epoch   " not in printed  # no training line
    assert (out / "checkpoint.npz").read_bytes() == before
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1 and (out / "samples.png").is_file()


# ----------------------------------------------------------------------------------------------
# 3. a failed write (disk full) keeps the previous checkpoint and stops with exit code 1
# ----------------------------------------------------------------------------------------------
def _no_temp_files(out: Path):
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(trained, tiny_mnist, tmp_path, capsys, monkeypatch):
    out = _copy(trained, tmp_path / "out")
    before = (out / "checkpoint.npz").read_bytes()

    def savez_disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise ENOSPC
    monkeypatch.setattr(np, "savez", savez_disk_full)
    code = demo.main([*_flags(tiny_mnist, out, "--seed", "3"), "--epochs", "2", "--resume"])
    monkeypatch.undo()
    assert code == 1
    err = one_line_error(capsys.readouterr().err)
    ckpt = out / "checkpoint.npz"
    assert f"could not write {ckpt}: No space left on device (ENOSPC)" in err
    assert f"the checkpoint {ckpt} (epoch 1) is intact" in err and "--resume" in err
    assert ckpt.read_bytes() == before and load_checkpoint(ckpt).meta["epoch"] == 1
    _no_temp_files(out)


def test_disk_full_during_a_figure_keeps_the_checkpoint(trained, tiny_mnist, tmp_path, capsys, monkeypatch):
    out = _copy(trained, tmp_path / "out")
    for png in out.glob("*.png"):
        png.unlink()

    def save_disk_full(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise ENOSPC
    monkeypatch.setattr(PIL.Image.Image, "save", save_disk_full)
    code = demo.main([*_flags(tiny_mnist, out, "--seed", "3"), "--epochs", "2", "--resume"])
    monkeypatch.undo()
    assert code == 1
    err = one_line_error(capsys.readouterr().err)
    ckpt = out / "checkpoint.npz"
    assert f"could not write {out / 'reconstructions.png'}: No space left on device (ENOSPC)" in err
    assert f"the checkpoint {ckpt} (epoch 2) is intact" in err
    assert load_checkpoint(ckpt).meta["epoch"] == 2 and not list(out.glob("*.png"))
    _no_temp_files(out)
    # space freed: the printed command finishes the job without training again
    assert demo.main([*_flags(tiny_mnist, out, "--seed", "3"), "--epochs", "2", "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (out / "reconstructions.png").is_file() and (out / "metrics.json").is_file()
