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


def test_equal_epochs_table_quotes_its_runs():
    """docs/results.md and the guide's "Beyond one Gaussian layer" section quote the table that
    benchmarks/reproduce_equal_epochs.py wrote from the runs' result.json files, verbatim; the
    README's hvae and vamp rows quote their NLLs; each finding in table.json recomputes from the rows."""
    from benchmarks import reproduce_equal_epochs as equal

    folder = RESULTS / "equal_epochs"
    table = (folder / "table.md").read_text()
    report = json.loads((folder / "table.json").read_text())
    rows = {r["run"]: r for r in report["rows"]}
    for r in rows.values():  # each row is its run's result.json, measured as the issue asks
        assert json.loads((folder / r["run"] / "result.json").read_text()) == r
        assert r["epochs"] == 100 and r["batch_size"] == 100 and r["k"] == 5000 and r["test_images"] == 10000
    assert report["findings"] == equal.findings(report["rows"])
    results = _section((ROOT / "docs" / "results.md").read_text(), "## The papers' orderings at equal epochs")
    assert table.strip() in results
    guide = _section((ROOT / "docs" / "guide.md").read_text(), "## 25. Beyond one Gaussian layer")
    assert table.strip() in guide
    readme = (ROOT / "README.md").read_text()
    for kind, run in (("hvae", "vae_2l"), ("vamp", "vamp")):
        if run in rows:
            line = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{kind}`"))
            assert f"−{rows[run]['nll']:.2f}" in line, kind


def test_guide_beyond_section_quotes_the_vampprior_runs():
    """The guide's VampPrior paragraph and its exercise quote demos/guide/vampprior.py's numbers files."""
    guide = _section((ROOT / "docs" / "guide.md").read_text(), "## 25. Beyond one Gaussian layer")
    data = ROOT / "docs" / "guide_data"
    main = json.loads((data / "vampprior.json").read_text())["numbers"]
    k1 = json.loads((data / "exercises" / "vampprior--n-pseudo_1.json").read_text())["numbers"]
    assert f"{main['vamp_minus_vae_elbo']:.2f} ± {main['vamp_minus_vae_elbo_se']:.2f} nats" in guide
    assert f"{k1['vamp_minus_vae_elbo']:.2f} ± {k1['vamp_minus_vae_elbo_se']:.2f} nats" in guide
    assert k1["n_pseudo"] == 1 and main["n_pseudo"] == 50
    for model in ("VAE", "VampVAE"):
        assert f"{main[model]['aggregate_inside_prior']:.0%}" in guide
        assert f"{main[model]['prior_in_holes']:.0%}" in guide
    hvae = json.loads((data / "exercises" / "train_mnist--model_hvae_--top-latent-dim_50_--epochs_5_--train-limit_10000_"
                                            "--eval-images_500.json").read_text())
    z1, z2 = hvae["active_units_per_layer"]
    assert f"z1 keeps {z1} of 20 units active, z2 only {z2} of 50" in guide
