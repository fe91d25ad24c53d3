"""benchmarks/reproduce_iwae.py checks every argument (issue #21, item 6), with the demo's one-line errors.

Before: ``--batch-size 0``, ``--train-limit 0``, ``--budget-minutes nan``, a bad plan.json and a
truncated checkpoint ended in tracebacks; ``--eval-k 0`` failed only after training;
``--epochs 0`` was read as "not given" (a 90-minute budget) and ``--epochs -5`` ran 8 epochs.
"""

import json

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
