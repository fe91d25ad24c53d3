"""The numbers the docs quote equal the files the benchmark scripts wrote.

benchmarks/bench_tricks.py writes benchmarks/results/tricks.json; benchmarks/README.md's
"Speed tricks" table quotes it row by row. benchmarks/bench_train.py wrote the two runs
that the "The layout of b307645 and now" table of benchmarks/README.md compares. A
re-run of a script must be followed by the table, or this test fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
RESULTS = ROOT / "benchmarks" / "results"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else len(text)]


def _rows(section: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (backticks stripped)."""
    rows = {}
    for line in section.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_speed_tricks_table_quotes_tricks_json():
    report = json.loads((RESULTS / "tricks.json").read_text())
    section = _section(README.read_text(), "## Speed tricks")
    assert report["git"]["commit"][:7] in section, "the table names the commit it was measured at"
    assert report["cpu"]["model_name"] in section, "the table names the machine"
    rows = _rows(section)
    for trick, r in report["tricks"].items():
        assert trick in rows, f"{trick}: no row in the Speed tricks table"
        cells = rows[trick]
        assert f"{r['median_on_s']:.2f}" in cells and f"{r['median_off_s']:.2f}" in cells, (trick, cells)
        assert f"{100 * r['saving']:.1f} %" in cells, (trick, cells)
        assert ("kept" if r["keep"] else "removed") in " ".join(cells), (trick, cells)


@pytest.mark.parametrize("name", ["layout_before.json", "layout_after.json"])
def test_layout_comparison_quotes_bench_train_runs(name):
    """Each run's line gives, per row, npvae / PyTorch by median wall time and by median CPU time."""
    report = json.loads((RESULTS / name).read_text())
    section = _section(README.read_text(), "## The layout of b307645 and now")
    commit = report["meta"]["git"]["commit"][:7]
    lines = [ln for ln in section.splitlines() if ln.startswith("|") and commit in ln]
    assert len(lines) == 1, f"{name}: expected one table row naming commit {commit}"
    cells = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    result = {(r["row"], r["framework"]): r["result"] for r in report["rows"]}
    for row in ("main", "loglik"):
        wall = report["ratios"]["torch"][row]
        cpu = result[row, "npvae"]["cpu_median_s"] / result[row, "torch"]["cpu_median_s"]
        assert f"{wall:.2f}" in " ".join(cells) and f"{cpu:.2f}" in " ".join(cells), (name, row, cells)


def test_default_run_numbers_quote_its_metrics_json():
    """README.md and docs/results.md quote the default VAE run's metrics.json (docs/runs/vae_default.json)."""
    run = json.loads((ROOT / "docs" / "runs" / "vae_default.json").read_text())
    readme = (ROOT / "README.md").read_text()
    results = _section((ROOT / "docs" / "results.md").read_text(), "## The default run")
    for key in ("test_neg_elbo", "test_log_likelihood", "log_likelihood_stderr"):
        assert f"{abs(run[key]):.2f}" in readme, key
    for key in ("test_neg_elbo", "test_reconstruction", "test_kl", "initial_test_neg_elbo",
                "test_log_likelihood", "log_likelihood_stderr"):
        assert f"{abs(run[key]):.2f}" in results, key
    assert f"{run['seconds_per_epoch']:.1f} s per epoch" in results
    assert f"{run['active_units']} of 20" in results
    assert run["model"]["kind"] == "vae" and run["epochs"] == 10 and run["log_likelihood_images"] == 10000


def test_convvae_comparison_quotes_its_runs():
    """The ConvVAE row of README.md and the comparison in docs/results.md quote the runs' metrics.json files."""
    runs = {name: json.loads((ROOT / "docs" / "runs" / f"{name}.json").read_text())
            for name in ("conv_default", "vae_default", "vae_150_epochs")}
    readme = (ROOT / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `conv`"))
    conv = runs["conv_default"]
    assert f"{conv['test_neg_elbo']:.2f}" in row and f"{abs(conv['test_log_likelihood']):.2f}" in row
    assert f"{conv['active_units']} of 20" in row
    section = _section((ROOT / "docs" / "results.md").read_text(), "## The ConvVAE against the MLP VAE")
    for name, run in runs.items():
        assert f"{run['test_neg_elbo']:.2f}" in section, name
        assert f"−{abs(run['test_log_likelihood']):.2f} ± {run['log_likelihood_stderr']:.2f}" in section, name
        assert f"{run['active_units']} of 20" in section, name
    assert conv["model"]["kind"] == "conv" and conv["epochs"] == 10 and runs["vae_150_epochs"]["epochs"] == 150
