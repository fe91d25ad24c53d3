"""benchmarks/reproduce_iwae.py and reproduce_equal_epochs.py check every argument (issue #21, item 6; issue 20), with the demo's one-line errors.

Before: ``--batch-size 0``, ``--train-limit 0``, ``--budget-minutes nan``, a bad plan.json and a
truncated checkpoint ended in tracebacks; ``--eval-k 0`` failed only after training;
``--epochs 0`` was read as "not given" (a 90-minute budget) and ``--epochs -5`` ran 8 epochs.
"""

import json

import numpy as np
import pytest

from benchmarks import reproduce_iwae


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--train-limit", "0"], "argument --train-limit: expected an integer >= 1, got 0"),
    (["--test-limit", "-3"], "argument --test-limit: expected an integer >= 1, got -3"),
    (["--budget-minutes", "nan"], "argument --budget-minutes: expected a finite number > 0, got nan"),
    (["--budget-minutes", "-1"], "argument --budget-minutes: expected a finite number > 0, got -1"),
    (["--eval-k", "0"], "argument --eval-k: expected an integer >= 1, got 0"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (["--epochs", "-5"], "argument --epochs: expected an integer >= 1, got -5"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--out", ""], "argument --out: expected a folder path, got ''"),
    (["--test-limit", "1"], "--test-limit: expected at least 2 test images"),
    (["--full", "--epochs", "3"], "--epochs 3: expected it without --full"),
    (["--eval-k", "10000000000000"], "--eval-k: expected an integer <= "),
])
def test_bad_arguments_exit_2_before_the_data(argv, message, capsys, no_data):
    with pytest.raises(SystemExit) as info:
        reproduce_iwae.main(["--model", "vae", *argv])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reproduce_iwae.py: error: ")]
    assert len(err) == 1 and message in err[0], err


def test_model_is_required(capsys, no_data):
    with pytest.raises(SystemExit) as info:
        reproduce_iwae.main([])
    assert info.value.code == 2 and "--model: expected one of iaf, iwae5" in capsys.readouterr().err


def _stopped_run(fake_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(fake_mnist))
    argv = ["--model", "vae", "--epochs", "8", "--train-limit", "200", "--test-limit", "20", "--eval-k", "2",
            "--quiet", "--out", str(tmp_path)]
    assert reproduce_iwae.main(argv) == 0
    return argv, tmp_path / "vae"


def test_a_bad_plan_or_checkpoint_is_one_line(fake_mnist, tmp_path, monkeypatch, capsys):
    argv, run_dir = _stopped_run(fake_mnist, tmp_path, monkeypatch)
    capsys.readouterr()
    good_plan, good_ckpt = (run_dir / "plan.json").read_bytes(), (run_dir / "checkpoint.npz").read_bytes()
    for plan, message in (("{not json", "expected the JSON plan this script writes"),
                          (json.dumps({"stages": [1, 2]}), "'stages': expected 8 integers >= 1, got [1, 2]"),
                          (json.dumps({"stages": [1] * 8, "budget_minutes": "x"}),
                           "'budget_minutes': expected null or a finite number > 0, got 'x'")):
        (run_dir / "plan.json").write_text(plan)
        assert reproduce_iwae.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("reproduce_iwae.py: error: ") and err.count("\n") == 1 and message in err, err
    (run_dir / "plan.json").write_bytes(good_plan)
    (run_dir / "checkpoint.npz").write_bytes(good_ckpt[: len(good_ckpt) // 2])
    assert reproduce_iwae.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce_iwae.py: error: checkpoint ") and err.count("\n") == 1
    assert "the file is corrupted or not an npvae checkpoint" in err


def test_a_run_folder_in_use_is_refused(fake_mnist, tmp_path, monkeypatch, capsys):
    from npvae.checkpoint import lock_folder
    import os

    monkeypatch.setenv("NPVAE_DATA_DIR", str(fake_mnist))
    (tmp_path / "vae").mkdir()
    fd = lock_folder(tmp_path / "vae")
    try:
        assert reproduce_iwae.main(["--model", "vae", "--epochs", "8", "--out", str(tmp_path)]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert f"got {tmp_path / 'vae'} locked by the run with pid {os.getpid()}" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# benchmarks/reproduce_equal_epochs.py (issue 20): every run at one budget, resumable
# ----------------------------------------------------------------------------------------------
from benchmarks import reproduce_equal_epochs as equal  # noqa: E402


def test_equal_epochs_runs_resumes_and_tabulates(fake_mnist, tmp_path, monkeypatch, capsys):
    """A two-layer run trains, measures its curve, resumes from its checkpoint to a longer budget
    (keeping the curve points already measured) and lands in the table with one active-unit count per layer."""
    monkeypatch.setenv("NPVAE_DATA_DIR", str(fake_mnist))
    monkeypatch.setattr(equal, "CURVE_K", 3)
    monkeypatch.setitem(equal.RUNS, "vae_2l", ("hvae", {**equal.TWO_LAYERS, "z_dims": (3, 2), "hidden": ((16,), (8,)),
                                                        "k": 1}, (85.33, "Burda et al. 2016, Table 1")))
    argv = ["--run", "vae_2l", "--train-limit", "200", "--test-limit", "20", "--eval-k", "4", "--quiet",
            "--out", str(tmp_path)]
    assert equal.main([*argv, "--epochs", "2"]) == 0
    curve = json.loads((tmp_path / "vae_2l" / "curve.json").read_text())
    assert [c["epoch"] for c in curve] == [1, 2]
    assert equal.main([*argv, "--epochs", "5"]) == 0   # resumed at epoch 2, not started again
    assert "resumed at epoch 2 of 5" in capsys.readouterr().out
    result = json.loads((tmp_path / "vae_2l" / "result.json").read_text())
    assert [c["epoch"] for c in result["curve"]] == [1, 2, 5] and result["curve"][:2] == curve
    assert result["epochs"] == 5 and len(result["active_units"]) == 2 and result["z_dims"] == [3, 2]
    assert result["test_images"] == 20 and result["k"] == 4 and np.isfinite(result["nll"])
    assert equal.curve_epochs(100) == [1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    table = (tmp_path / "table.md").read_text()
    assert "| vae_2l | " in table and " + " in table and (tmp_path / "curve.png").stat().st_size < 300_000


def test_equal_epochs_refuses_bad_arguments(capsys, no_data):
    with pytest.raises(SystemExit) as info:
        equal.main([])
    assert info.value.code == 2 and "--run: expected one of vae, iwae5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        equal.main(["--run", "vae", "--epochs", "0"])
    assert info.value.code == 2 and "argument --epochs: expected an integer >= 1, got 0" in capsys.readouterr().err
