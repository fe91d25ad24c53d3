"""The study guide's scripts (part C): recon_vs_gen, any_distribution, graphical_model, aggregate_posterior.

What they compute is checked where it is fast and exact: the per-image ELBO gradient of the
amortization-gap experiment by float64 central differences, the per-image ELBO against
``VAE.forward``'s, the fixed-proposal importance sampler against the library's, the identity
rate = mutual information + marginal KL on a case where all three are computed independently
(three 1-D Gaussian posteriors, quadrature), the exact toy densities by quadrature, and the
nearest-neighbour distances by brute force. Then each script's ``main`` runs in ``--quick`` mode
into a temporary folder (real MNIST through the ``mnist_dir`` fixture, skipped with a reason when
NPVAE_DATA_DIR is unset). Last, every number the guide's sections of these scripts quote equals
the script's JSON (docs/guide_data/<name>.json), rounded as printed: the sections are read from
docs/guide.md once they are merged there, else from the staging file they were written in.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from demos.guide import aggregate_posterior, any_distribution, graphical_model, recon_vs_gen
from npvae import distributions as dist
from npvae import evaluate, gradcheck
from npvae.models import VAE

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_REL: dict = {}     # largest finite-difference relative errors, printed by conftest
QUAD: dict = {}        # quadrature identities: largest absolute error


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 1_000 < len(data) < 300 * 1024, f"{path}: {len(data)} bytes"


def _tiny_vae(likelihood="bernoulli", seed=0):
    return VAE(12, 3, (8,), "tanh", likelihood, rng=np.random.default_rng(seed), dtype=np.float64)


# ---- graphical_model: the per-image ELBO, its gradient, the optimisation, the fixed proposal --------------
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_local_elbo_grad_matches_finite_differences(likelihood):
    rng = np.random.default_rng(1)
    model = _tiny_vae(likelihood)
    x = (rng.random((4, 12)) < 0.4).astype(np.float64)
    mu, logvar = rng.normal(0, 0.8, (4, 3)), rng.normal(-0.5, 0.6, (4, 3))
    eps = rng.standard_normal((5, 4, 3))
    elbo, dmu, dlogvar = graphical_model.local_elbo_grad(model, x, mu, logvar, eps)
    np.testing.assert_allclose(elbo, graphical_model.local_elbo(model, x, mu, logvar, eps), rtol=1e-13)
    f = lambda: -graphical_model.local_elbo(model, x, mu, logvar, eps).sum()  # noqa: E731 - reads mu, logvar in place
    for name, theta, g in (("mu", mu, dmu), ("logvar", logvar, dlogvar)):
        r = gradcheck.check_gradient(f, theta, g, name=name)
        MAX_REL[f"graphical_model.local_elbo_grad d{name} ({likelihood})"] = r.rel_error
        assert r.rel_error < 1e-6, (name, r.rel_error)


def test_local_elbo_is_the_models_elbo_at_the_encoders_q():
    rng = np.random.default_rng(2)
    model = _tiny_vae()
    x = (rng.random((6, 12)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((3, 6, 3))
    mu, logvar = model.encode(x)
    terms = model.forward(x, eps=eps, n_samples=3)
    np.testing.assert_allclose(graphical_model.local_elbo(model, x, mu, logvar, eps), terms.metrics["elbo"], rtol=1e-12)


def test_optimize_local_raises_each_images_elbo():
    rng = np.random.default_rng(3)
    model = _tiny_vae()
    for p in model.params.values():
        p *= 2.5                                                      # a sharper decoder: a posterior far from q
    x = (rng.random((5, 12)) < 0.5).astype(np.float64)
    mu, logvar = model.encode(x)
    same_mu, same_lv, _ = graphical_model.optimize_local(model, x, mu, logvar, steps=0, rng=rng)
    np.testing.assert_array_equal(same_mu, mu)
    np.testing.assert_array_equal(same_lv, logvar)
    eps = rng.standard_normal((4000, 5, 3))                           # common noise: the ELBOs differ by the q only
    mu2, lv2, trace = graphical_model.optimize_local(model, x, mu, logvar, steps=300, lr=0.05, rng=rng,
                                                     trace_eps=eps[:200], trace_steps=(0, 300))
    before = graphical_model.local_elbo(model, x, mu, logvar, eps)
    after = graphical_model.local_elbo(model, x, mu2, lv2, eps)
    assert np.all(after > before + 0.05), (before, after)
    assert [t for t, _ in trace] == [0, 300] and trace[1][1] > trace[0][1]


def test_fixed_proposal_is_the_library_sampler_with_other_gaussians():
    rng = np.random.default_rng(4)
    model = _tiny_vae()
    x = (rng.random((3, 12)) < 0.5).astype(np.float64)
    mu, logvar = model.encode(x)
    a = evaluate.log_likelihood(model, x, 64, rng=np.random.default_rng(9), batch_size=3)
    b = evaluate.log_likelihood(graphical_model.FixedProposal(model, x, mu, logvar), x, 64,
                                rng=np.random.default_rng(9), batch_size=3)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    with pytest.raises(ValueError, match="x: expected the"):
        graphical_model.FixedProposal(model, x, mu, logvar).proposal(x[:2])


# ---- aggregate_posterior: rate = MI + marginal KL ---------------------------------------------------------
def _quadrature_decomposition(m, s):
    """Rate, MI and KL(q(z) || p(z)) of K equally weighted 1-D posteriors N(m_k, s_k^2), each by its own integral."""
    K = len(m)
    q_mix = lambda z: np.mean(norm.pdf(z, m, s))  # noqa: E731
    rate = np.mean([integrate.quad(lambda z, a=a, b=b: norm.pdf(z, a, b) * (norm.logpdf(z, a, b) - norm.logpdf(z)),
                                   a - 12 * b, a + 12 * b, epsabs=1e-13, epsrel=1e-12)[0] for a, b in zip(m, s)])
    mi = np.mean([integrate.quad(lambda z, a=a, b=b: norm.pdf(z, a, b) * (norm.logpdf(z, a, b) - math.log(q_mix(z))),
                                 a - 12 * b, a + 12 * b, epsabs=1e-13, epsrel=1e-12, limit=200)[0] for a, b in zip(m, s)])
    lo, hi = min(m - 12 * s), max(m + 12 * s)
    mkl = integrate.quad(lambda z: q_mix(z) * (math.log(q_mix(z)) - norm.logpdf(z)), lo, hi, epsabs=1e-13,
                         epsrel=1e-12, limit=400, points=list(m))[0]
    return rate, mi, mkl, K


def test_rate_is_mutual_information_plus_marginal_kl_by_quadrature():
    m, s = np.array([-1.5, 0.3, 2.0]), np.array([0.4, 0.7, 0.25])
    rate, mi, mkl, K = _quadrature_decomposition(m, s)
    closed = dist.gaussian_kl(m[:, None], 2 * np.log(s)[:, None]).mean()
    QUAD["rate: quadrature vs closed form"] = abs(rate - closed)
    QUAD["rate - (MI + marginal KL), quadrature"] = abs(rate - (mi + mkl))
    assert abs(rate - closed) < 1e-9
    assert abs(rate - (mi + mkl)) < 1e-9
    assert 0 < mi < math.log(K) and mkl > 0
    # the script's Monte Carlo estimator agrees with the three integrals
    est = aggregate_posterior.rate_decomposition(m[:, None], 2 * np.log(s)[:, None], draws=40_000,
                                                 rng=np.random.default_rng(5))
    assert est["rate"] == pytest.approx(closed, rel=1e-12)
    assert est["log_n"] == pytest.approx(math.log(K))
    assert abs(est["mutual_information"] - mi) < 0.01 and abs(est["marginal_kl"] - mkl) < 0.01, (est, mi, mkl)
    assert est["rate_mc"] == pytest.approx(est["mutual_information"] + est["marginal_kl"], rel=1e-12)


def test_collapsed_posteriors_carry_no_information():
    """q(z|x) = p(z) for every x: rate, MI and marginal KL are all exactly 0."""
    est = aggregate_posterior.rate_decomposition(np.zeros((50, 2)), np.zeros((50, 2)), draws=3,
                                                 rng=np.random.default_rng(6))
    for key in ("rate", "mutual_information", "marginal_kl"):
        assert abs(est[key]) < 1e-12, (key, est[key])


def test_log_aggregate_and_hole_fraction():
    rng = np.random.default_rng(7)
    mu, logvar, z = rng.normal(size=(5, 2)), rng.normal(-1, 0.3, (5, 2)), rng.normal(size=(9, 2))
    direct = np.log(np.mean([np.exp(dist.gaussian_log_prob(z, mu[n], logvar[n])) for n in range(5)], axis=0))
    np.testing.assert_allclose(aggregate_posterior.log_aggregate(z, mu, logvar, chunk=4), direct, rtol=1e-12)
    # q = p: no holes; q far away from the prior: every prior draw is in a hole
    assert aggregate_posterior.hole_fraction(np.zeros((3, 2)), np.zeros((3, 2)), n=500, rng=rng) == 0.0
    assert aggregate_posterior.hole_fraction(np.full((3, 2), 40.0), np.zeros((3, 2)), n=500, rng=rng) == 1.0
    with pytest.raises(ValueError, match="logvar"):
        aggregate_posterior.log_aggregate(z, mu, logvar[:, :1])


# ---- any_distribution: exact toy densities, the gaps, the fixed map -----------------------------------------
def test_true_log_density_of_the_moons_is_the_integral_along_the_arcs():
    """At a few points, the trapezoid rule of the script against scipy's adaptive quadrature of the definition
    p(x) = 1/2 sum_m (1/pi) int_0^pi N(x; a_m(t), s^2 I) dt; and the density integrates to 1 over the plane."""
    s = any_distribution.MOON_NOISE
    pts = np.array([[0.0, 1.0], [1.0, -0.5], [0.5, 0.25], [0.98, 0.1], [-1.0, 0.02]])
    def exact(p):
        total = 0.0
        for m in range(2):
            f = lambda t: math.exp(-np.sum((p - any_distribution._moon_arcs(np.array([t]))[m, 0]) ** 2) / (2 * s * s))
            total += integrate.quad(f, 0, math.pi, epsabs=0, epsrel=1e-12, limit=400)[0]
        return math.log(total / (2 * math.pi) / (2 * math.pi * s * s))
    got = any_distribution.true_log_density("two moons", pts)                  # the script's grid, 4001 angles
    want = np.array([exact(p) for p in pts])
    QUAD["any_distribution.true_log_density, moons: trapezoid vs quad (nats)"] = float(np.max(np.abs(got - want)))
    np.testing.assert_allclose(got, want, atol=1e-4)                          # O(h^2) at the arcs' ends
    ax1, ax2 = np.linspace(-1.6, 2.6, 169), np.linspace(-1.1, 1.6, 109)        # 4 noise s.d. around the moons
    X, Y = np.meshgrid(ax1, ax2)
    dens = np.exp(any_distribution.true_log_density("two moons", np.c_[X.ravel(), Y.ravel()], n_grid=401))
    mass = integrate.trapezoid(integrate.trapezoid(dens.reshape(X.shape), ax1, axis=1), ax2)
    assert abs(mass - 1) < 1e-3, mass


def test_true_log_density_of_the_mixture_integrates_to_one():
    ax = np.linspace(-3, 3, 301)
    X, Y = np.meshgrid(ax, ax)
    dens = np.exp(any_distribution.true_log_density("eight Gaussians", np.c_[X.ravel(), Y.ravel()])).reshape(X.shape)
    mass = integrate.trapezoid(integrate.trapezoid(dens, ax, axis=1), ax)
    QUAD["any_distribution.true_log_density mass - 1 (eight Gaussians)"] = abs(mass - 1)
    assert abs(mass - 1) < 1e-6, mass
    with pytest.raises(ValueError, match="target"):
        any_distribution.true_log_density("three moons", np.zeros((1, 2)))


def test_samplers_match_their_shapes():
    rng = np.random.default_rng(8)
    moons = any_distribution.two_moons(4000, rng=rng)
    mix = any_distribution.eight_gaussians(4000, rng=rng)
    assert any_distribution.off_support_fraction("two moons", moons) < 0.01
    assert any_distribution.off_support_fraction("eight Gaussians", mix) < 0.01
    assert any_distribution.off_support_fraction("eight Gaussians", np.zeros((3, 2))) == 1.0
    shares = any_distribution.mode_shares(mix)
    assert shares.sum() == pytest.approx(1.0) and np.all(np.abs(shares - 1 / 8) < 0.03)
    ring = np.linalg.norm(any_distribution.doersch_map(rng.standard_normal((1000, 2))), axis=1)
    assert np.all((ring > 1.0) & (ring < 1.0 + 0.6))                  # |g(z)| = 1 + |z|/10


# ---- recon_vs_gen: nearest distances, likelihood by code --------------------------------------------------
def test_nearest_distances_by_brute_force():
    rng = np.random.default_rng(9)
    q, ref = rng.random((7, 5)), rng.random((40, 5))
    d, i = recon_vs_gen.nearest_distances(q, ref, chunk=3)
    brute = np.linalg.norm(q[:, None] - ref[None], axis=-1)
    np.testing.assert_array_equal(i, brute.argmin(1))
    np.testing.assert_allclose(d, brute.min(1), rtol=1e-10)


def test_neg_log_lik_by_code_own_code_is_the_reconstruction_term():
    rng = np.random.default_rng(10)
    model = _tiny_vae()
    x = (rng.random((4, 12)) < 0.5).astype(np.float64)
    nll = recon_vs_gen.neg_log_lik_by_code(model, x, rng=np.random.default_rng(11), draws=2)
    eps = np.random.default_rng(11).standard_normal((2, 4, 3))       # the first draws of the same stream
    np.testing.assert_allclose(nll["own"], model.forward(x, eps=eps, n_samples=2).metrics["reconstruction"],
                               rtol=1e-12)
    assert set(nll) == {"own", "other", "prior"}


# ---- every script end to end, --quick ---------------------------------------------------------------------
SCRIPTS = {"recon_vs_gen": recon_vs_gen, "any_distribution": any_distribution, "graphical_model": graphical_model,
           "aggregate_posterior": aggregate_posterior}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_quick(name, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(mnist_dir))
    out = SCRIPTS[name].main(["--quick", "--out", str(tmp_path)])
    _check_png(tmp_path / f"guide_{name}.png")
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["script"] == f"demos/guide/{name}.py" and record["settings"]["quick"] is True
    n = out["numbers"]
    if name == "graphical_model":
        for split in ("test", "train"):
            s = n[split]
            assert s["amortization_gap"] == pytest.approx(s["elbo_optimized"] - s["elbo_encoder"], rel=1e-9)
            assert s["approximation_gap"] == pytest.approx(s["log_px"] - s["elbo_optimized"], rel=1e-9)
            assert s["log_px"] >= max(s["log_px_encoder"], s["log_px_optimized"]) - 1e-9
    elif name == "aggregate_posterior":
        assert n["rate_mc"] == pytest.approx(n["mutual_information"] + n["marginal_kl"], rel=1e-9)
        assert 0 <= n["mutual_information"] <= n["log_n"] + 1e-9
    elif name == "recon_vs_gen":
        assert set(n["neg_log_lik"]) == {"own", "other", "prior"} and n["kl"] > 0
    else:
        assert n["two_moons"]["sigma_x"] > 0 and 0 <= n["eight_Gaussians"]["mode_share_min"] <= 1 / 8


# ---- the numbers the guide quotes are the JSON's ----------------------------------------------------------
STAGING = Path("/work/staging/guide_concepts.md")


def _pct(v, digits=0):
    return f"{100 * v:.{digits}f}"


def _expected(name: str, n: dict) -> list[str]:
    """The strings the section of script ``name`` prints, from its JSON's numbers."""
    f2 = lambda v: f"{v:.2f}"  # noqa: E731
    if name == "recon_vs_gen":
        nll = n["neg_log_lik"]
        return [f2(n["sigma"]["geometric_mean"]), f"{nll['own']:.1f}", f"{nll['other']:.1f}",
                f"{nll['prior']:.1f}", f"{n['kl']:.1f}", f2(n["distance_recon_to_own_x"]),
                f2(n["distance_recon_to_nearest_train"]), f2(n["distance_sample_to_nearest_train"]),
                _pct(n["fraction_samples_closer_than_median_recon"]), f"{n['n_train']:,}", f"{n['n_eval']:,}"]
    if name == "any_distribution":
        out = [f"{n['steps']:,}", f"{n['k']:,}"]
        for key in ("two_moons", "eight_Gaussians"):
            t = n[key]
            out += [f"{t['sigma_x']:.3f}", f"{t['data_noise']:g}", f2(t["log_px_model"]), f2(t["log_px_true"]),
                    f2(t["kl_data_model"]), _pct(t["gap_means"], 1), _pct(t["gap_samples"], 1)]
        out += [_pct(n["eight_Gaussians"]["mode_share_min"], 1), _pct(n["eight_Gaussians"]["mode_share_max"], 1)]
        return out
    if name == "graphical_model":
        t, tr = n["test"], n["train"]
        return [f"{n['n_train']:,}", str(n["epochs"]), str(n["n_eval"]), str(n["steps"]), f"{n['k']:,}",
                f"{n['eval_samples']:,}", f"{n['lr']:g}",
                f2(t["elbo_encoder"]), f2(t["elbo_optimized"]), f2(t["log_px"]), f2(t["log_px_encoder"]),
                f2(t["log_px_optimized"]), f2(t["amortization_gap"]), f2(t["amortization_gap_se"]),
                f2(t["approximation_gap"]), f2(t["approximation_gap_se"]), _pct(t["amortization_share"]),
                _pct(t["fraction_optimized_proposal_higher"]), f2(t["sigma_ratio"]), f2(t["mu_shift_median"]),
                _pct(t["gain_reached"]["100"]), f2(tr["amortization_gap"]), f2(tr["approximation_gap"])]
    if name == "aggregate_posterior":
        return [f2(n["rate"]), f2(n["mutual_information"]), f2(n["marginal_kl"]), f2(n["rate_mc"]),
                f2(n["rate_mc_se"]), f2(n["log_n"]), _pct(n["mi_share"]),
                f2(n["by_n"]["500"]["mutual_information"]), f2(n["by_n"]["2000"]["mutual_information"]),
                f2(n["mean_sd"][0]), f2(n["mean_sd"][1]), f2(n["posterior_sigma_geometric_mean"]),
                _pct(n["inside_2_means"]), _pct(n["inside_2_draws"]), _pct(n["inside_2_prior"], 1),
                _pct(n["prior_draws_in_holes"], 1), f2(n["q_peak"]), f2(n["prior_peak"]), f"{n['n_train']:,}",
                str(n["epochs"]), f"{n['n_test']:,}"]
    raise KeyError(name)


#: each section (its heading, with or without the number the guide gives it) and the script it quotes
SECTIONS = {
    "Reconstruction is not generation": "recon_vs_gen",
    "Can a decoder turn N(0, I) into any distribution?": "any_distribution",
    "How does a VAE compare with a GAN?": None,
    "The VAE as a graphical model": "graphical_model",
    "The aggregate posterior and the rate": "aggregate_posterior",
}


def _sections() -> dict:
    """Heading -> text of each section above, from docs/guide.md if it has them, else from the staging file."""
    sources = [REPO / "docs" / "guide.md", STAGING]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        found = {}
        for heading in SECTIONS:
            m = re.search(rf"^## (?:\d+\. )?{re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
            if m:
                found[heading] = m.group(1)
        if len(found) == len(SECTIONS):
            return found
    pytest.fail(f"the sections {list(SECTIONS)} are in neither {sources[0]} nor {sources[1]}")


def _normalise(text: str) -> str:
    return text.replace("−", "-").replace("\u2009", " ")


def test_every_quoted_number_is_the_scripts():
    """Each number of a section is a value of its script's JSON, rounded as printed, and each value it
    should quote is there. Decimal numbers and percentages in the text outside the JSON's set fail,
    unless they are fixed constants of the mathematics (listed here)."""
    constants = {"86.5", "0.16", "12.5"}          # 1 - e^-2 = 86.5 %; 1/(2 pi) = 0.16; 1/8 = 12.5 %
    sections = _sections()
    for heading, name in SECTIONS.items():
        text = _normalise(sections[heading])
        if name is None:
            prose = re.sub(r"\$[^$]*\$", "", re.sub(r"\$\$.*?\$\$", "", text, flags=re.S))
            prose = re.sub(r"(§|section |sec\. )\d+(\.\d+)*", "", prose)
            assert not re.findall(r"\d+\.\d+", prose), f"{heading}: quotes numbers but has no script"
            continue
        record = json.loads((REPO / "docs" / "guide_data" / f"{name}.json").read_text())
        expected = _expected(name, record["numbers"])
        missing = [e for e in expected if e.replace("−", "-") not in text]
        assert not missing, f"{heading}: the JSON's {missing} are not quoted (or quoted with other values)"
        allowed = set(expected) | constants
        prose = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)          # display equations hold no measured number
        prose = re.sub(r"(§|section |sec\. )\d+(\.\d+)*", "", prose)      # section numbers of papers and docs
        stray = [v for v in re.findall(r"(?<![\w.])-?(\d+\.\d+)", prose) if v not in allowed
                 and "-" + v not in allowed]
        assert not stray, f"{heading}: numbers not in docs/guide_data/{name}.json: {stray}"
