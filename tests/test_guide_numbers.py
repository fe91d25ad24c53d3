"""Every number docs/guide.md quotes from a guide script (sections 1-15, the mistakes list) is the
number that script wrote.

Each guide script writes its numbers to ``docs/guide_data/<script>.json`` (``demos/guide/common.py:
write_numbers``); the default run's numbers are in ``docs/runs/vae_default.json``. :data:`QUOTES`
lists each quoted number as a row

    (json file, key path, format, text of the guide with ``{}`` where the number stands[, transform])

(a tuple of key paths passes all their values to the transform, e.g. a difference), and the test
formats the JSON value (after the optional transform) and checks that the text, so
filled in, occurs in the guide. A row fails with the expected and the nearest text found, so a
re-run script whose numbers moved says exactly which sentence to update. Key paths are dotted
(``numbers.images.2.q_mu``: dict keys and list indices).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
DATA = REPO / "docs" / "guide_data"
RUNS = REPO / "docs" / "runs"


def neg(v):
    return -v


def pct(v):
    return 100 * v


def minutes(v):
    return v / 60


def thousands(v):
    return v / 1e3


def millions(v):
    return v / 1e6


def add(a, b):
    return a + b


def row(r):
    """One row of section 14's table from traversals.json's entry for one beta."""
    kl = r["kl_per_unit_sorted"]
    n = len(kl)
    return (f"{r['reconstruction']:.1f} | {r['kl']:.1f} | {kl[0]:.2f} … {kl[-1]:.2f} | "
            f"{r['active_units']} of {n}")


def capital_log_px(verdict):
    """The script's verdict as the guide writes it in bold: "No λ improves the test $\\log p(x)$ here"."""
    return verdict[0].upper() + verdict[1:].replace("test log p(x)", "the test $\\log p(x)$")


def round10(v):
    return round(v, -1)


def cpu_and_wall(cpu, wall):
    """Both columns of a row of the run-time table: "50 s | 120"."""
    return f"{round(cpu, -1):.0f} s | {round(wall, -1):.0f}"


def diff(a, b):
    return a - b


def smallest(*v):
    return min(v)


def largest(*v):
    return max(v)


def first_below_20(active):
    """The first epoch (1-based) with fewer than all 20 units active."""
    return next(e + 1 for e, a in enumerate(active) if a < 20)


def none_improves(improves):
    """The script's list of λ that improve the test log p(x); the guide says there are none."""
    assert improves == [], improves
    return ""


def count_in_words(v):
    """The length of a list, as the guide writes it: "three"."""
    return ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")[len(v)]


#: (json file, key path, format, guide text with {} for the number[, transform of the value])
QUOTES = [
    # ---- section 1 and 4: the default run (docs/runs/vae_default.json) ----
    ("runs/vae_default.json", "test_reconstruction", "{:.2f}", "at $z\\sim q(z\\mid x)$, $-{}$ nats on average"),
    ("runs/vae_default.json", "test_log_likelihood", "{:.2f}", "| ${}$ nats on average per test digit"),
    ("runs/vae_default.json", "log_likelihood_k", "{:d}", "the demo's default run reports $k={}$ on all"),
    ("runs/vae_default.json", "log_likelihood_images", "{:,}", "on all {}\ntest images"),
    ("runs/vae_default.json", "test_neg_elbo", "{:.2f}", "gap: test $-\\mathrm{{ELBO}}={}$ against"),
    ("runs/vae_default.json", "test_log_likelihood", "{:.2f}", "against $-\\log p(x)\\approx{}$ (standard", neg),
    ("runs/vae_default.json", "log_likelihood_stderr", "{:.2f}", "(standard error {},\n$k=1000$)"),
    ("runs/vae_default.json", ("test_neg_elbo", "test_log_likelihood"), "{:.1f}", "a gap of {} nats per image", add),
    ("runs/vae_default.json", ("test_neg_elbo", "test_log_likelihood"), "{:.1f}", "the default run's {}-nat gap", add),
    # ---- sections 1-3: intractable.py ----
    ("intractable.json", "numbers.images.2.q_mu", "{:.3f}", "$q(z\\mid x)=\\mathcal N({},\\,0.064^2)$ while"),
    ("intractable.json", "numbers.images.2.q_sd", "{:.3f}", "$q(z\\mid x)=\\mathcal N(0.419,\\,{}^2)$ while"),
    ("intractable.json", "numbers.images.2.post_mean", "{:.3f}", "the true posterior has mean {} and s.d."),
    ("intractable.json", "numbers.images.2.post_sd", "{:.3f}", "has mean 0.379 and s.d.\n{}: close"),
    ("intractable.json", "numbers.images.2.gap", "{:.3f}", "for that image is\n{} nats"),
    ("intractable.json", "numbers.images.1.q_mu", "{:.3f}", "whose $q=\\mathcal N({},\\,0.084^2)$"),
    ("intractable.json", "numbers.images.1.q_sd", "{:.3f}", "whose $q=\\mathcal N(0.715,\\,{}^2)$"),
    ("intractable.json", "numbers.images.1.post_mean", "{:.3f}", "sits on the posterior\n(mean {}, s.d."),
    ("intractable.json", "numbers.images.1.post_sd", "{:.3f}", "(mean 0.710, s.d. {}), it is"),
    ("intractable.json", "numbers.images.1.gap", "{:.3f}", "it is {} nats."),
    ("intractable.json", "numbers.summary.is_err_k10_max", "{:.2f}", "within {} nats of the exact value from $k=10$"),
    ("intractable.json", "numbers.summary.naive_err_k1_max", "{:.0f}", "The naive one is {} to\n", neg),
    ("intractable.json", "numbers.summary.naive_err_k1_min", "{:.0f}", "to\n{} nats low at $k=1$", neg),
    ("intractable.json", "numbers.summary.naive_within_0.1_from_k", "{:d}", "for all four only from $k={}$"),
    ("intractable.json", "numbers.summary.high_naive_err_kmax", "{:.1f}", "is still {} nats low at $k=10000$", neg),
    ("intractable.json", "numbers.images.3.q_sd", "{:.3f}", "(s.d. {} against 0.088)"),
    ("intractable.json", "numbers.images.3.post_sd", "{:.3f}", "(s.d. 0.120 against {})"),
    ("intractable.json", "numbers.summary.sd_k1000_is.3", "{:.3f}", "s.d. is {} nats against the naive one's"),
    ("intractable.json", "numbers.summary.sd_k1000_naive.3", "{:.3f}", "against the naive one's {}; for image 2"),
    ("intractable.json", "numbers.summary.sd_k1000_is.2", "{:.3f}", "(see §1), it is {} against"),
    ("intractable.json", "numbers.summary.sd_k1000_naive.2", "{:.3f}", "it is 0.066 against {}: barely"),
    # ---- section 11: ancestral.py ----
    ("ancestral.json", "numbers.pixel_difference", "{:.1f}", "same $z$ differ in {} % of the pixels", pct),
    ("ancestral.json", "numbers.entropy", "{:.1f}", "1,000 prior draws, is {} nats per image"),
    # ---- section 12: sigma_x.py ----
    ("sigma_x.json", "numbers.sigmas.0.03.kl", "{:.1f}", "the KL falls from {} to 4.6 nats"),
    ("sigma_x.json", "numbers.sigmas.1.kl", "{:.1f}", "the KL falls from 103.5 to {} nats"),
    ("sigma_x.json", "numbers.sigmas.0.03.sq_err", "{:.1f}", "squared error rises from {} to 35.1"),
    ("sigma_x.json", "numbers.sigmas.1.sq_err", "{:.1f}", "squared error rises from 15.7 to {}\nper image"),
    ("sigma_x.json", "numbers.sigmas.1.active", "{:d}", "All {} units are still active at every σ_x"),
    ("sigma_x.json", "numbers.sigmas.0.03.active", "{:d}", "All {} units are still active at every σ_x"),
    ("sigma_x.json", "numbers.sigmas.0.03.sigma_star", "{:.3f}", "$\\sigma_x^*$ of the trained decoders is {} at σ_x ="),
    ("sigma_x.json", "numbers.sigmas.1.sigma_star", "{:.3f}", "0.03 and {} at σ_x = 1"),
    ("sigma_x.json", "numbers.equivalence.a.sq_err", "{:.2f}", "end at squared errors {} and 15.51"),
    ("sigma_x.json", "numbers.equivalence.b.sq_err", "{:.2f}", "end at squared errors 15.50 and {}"),
    ("sigma_x.json", "numbers.equivalence.a.kl", "{:.2f}", "KLs {} and 61.09 nats"),
    ("sigma_x.json", "numbers.equivalence.b.kl", "{:.2f}", "KLs 61.04 and {} nats"),
    ("sigma_x.json", "numbers.equivalence.max_abs_diff", "{:.2f}", "separates them by up to {}.)"),
    ("sigma_x.json", "numbers.epochs", "{:d}", "still active at every σ_x after these {} epochs"),
    # ---- section 14: traversals.py (the table: one row per beta) ----
    *[("traversals.json", f"numbers.betas.{b}", "{}", f"| {b} | {{}} |", row) for b in ("0.5", "1", "4")],
    ("traversals.json", "numbers.epochs", "{:d}", "no unit switches off at these β after {} epochs"),
    # ---- sections 6 and 10: vae_vs_ae.py ----
    ("vae_vs_ae.json", "numbers.VAE.code_std.0", "{:.2f}", "posterior means with s.d. {} and 1.28"),
    ("vae_vs_ae.json", "numbers.VAE.code_std.1", "{:.2f}", "posterior means with s.d. 1.29 and {}"),
    ("vae_vs_ae.json", "numbers.VAE.inside", "{:.0f}", "per axis, and {} % of its 2,000 test codes lie", pct),
    ("vae_vs_ae.json", "numbers.prior_inside", "{:.1f}", "where {} % of prior draws fall.\nThe aggregate", pct),
    ("vae_vs_ae.json", "numbers.AE.code_std.0", "{:.2f}", "standard deviation of {} and 8.88"),
    ("vae_vs_ae.json", "numbers.AE.code_std.1", "{:.2f}", "standard deviation of 8.81 and {} per"),
    ("vae_vs_ae.json", "numbers.AE.code_max", "{:.1f}", "reach ±{} on an axis"),
    ("vae_vs_ae.json", "numbers.AE.inside", "{:.0f}", "only **{} %** of the test codes", pct),
    ("vae_vs_ae.json", "numbers.prior_inside", "{:.1f}", "within radius 2, where {} % of prior draws fall. Its", pct),
    ("vae_vs_ae.json", "numbers.VAE.code_std.0", "{:.2f}", "standard deviations {} and 1.28."),
    ("vae_vs_ae.json", "numbers.VAE.code_std.1", "{:.2f}", "standard deviations 1.29 and {}."),
    ("vae_vs_ae.json", "numbers.VAE.inside", "{:.0f}", "**{} %** lie within radius 2", pct),
    ("vae_vs_ae.json", "numbers.VAE.reconstruction", "{:.1f}", "code is {} nats for the VAE"),
    ("vae_vs_ae.json", "numbers.AE.reconstruction", "{:.1f}", "against {} for the AE."),
    ("vae_vs_ae.json", "numbers.epochs", "{:d}", "10,000 images, {} epochs; `inside_prior_fraction`"),
    # ---- section 13 (and the mistakes list): collapse.py ----
    ("collapse.json", "numbers.summary.active_at_epoch_5.none", "{:d}", "Without warm-up, all {} units are active"),
    ("collapse.json", "numbers.summary.first_epoch_below_all_active", "{:d}", "start switching off at epoch {}, and"),
    ("collapse.json", "numbers.summary.final_active.none", "{:d}", "**{} of 20** remain\nactive at epoch 30"),
    ("collapse.json", "numbers.summary.final_active.warmup", "{:d}", "**{} of 20** remain at epoch 30"),
    ("collapse.json", "numbers.epochs", "{:d}", "**7 of 20** remain\nactive at epoch {}."),
    ("collapse.json", "numbers.warmup_epochs", "{:.0f}", "With a {}-epoch warm-up, all 20 stay"),
    ("collapse.json", "numbers.summary.final_kl.none", "{:.1f}", "({} vs 5.9 nats)"),
    ("collapse.json", "numbers.summary.final_kl.warmup", "{:.1f}", "(5.5 vs {} nats)"),
    ("collapse.json", "numbers.summary.final_neg_elbo.none", "{:.2f}", "({} vs 741.06 nats"),
    ("collapse.json", "numbers.summary.final_neg_elbo.warmup", "{:.2f}", "(740.69 vs {} nats"),
    ("collapse.json", "numbers.summary.final_active.none", "{:d}", "in §13,\n    {} of 20 remain active after 30"),
    ("collapse.json", "numbers.summary.active_at_epoch_5.none", "{:d}", "after 5 epochs all {} still"),
    # ---- section 15: map_prior.py ----
    ("map_prior.json", "numbers.summary.zero_train", "{:.2f}", "training images get {} nats"),
    ("map_prior.json", "numbers.summary.zero_test", "{:.2f}", "the test images {} ± 1.66"),
    ("map_prior.json", "numbers.summary.zero_test_se", "{:.2f}", "−130.50 ± {} (± one standard"),
    ("map_prior.json", "numbers.summary.zero_gap", "{:.1f}", "a {}-nat gap."),
    ("map_prior.json", "numbers.summary.verdict", "{}", "**{}.**", capital_log_px),
    ("map_prior.json", "numbers.summary.gain_over_zero.0.01", "{:.2f}", "0.1 are {} and 0.38 nats", neg),
    ("map_prior.json", "numbers.summary.gain_over_zero.0.1", "{:.2f}", "0.1 are 0.19 and {} nats", neg),
    ("map_prior.json", "numbers.summary.gain_se.0.01", "{:.2f}", "of the differences, {} and 0.11"),
    ("map_prior.json", "numbers.summary.gain_se.0.1", "{:.2f}", "of the differences, 0.11 and {}:"),
    ("map_prior.json", "numbers.summary.gain_over_zero.1", "{:.1f}", "λ = 1 is\n{} nats worse", neg),
    ("map_prior.json", "numbers.rows.4.test", "{:.2f}", "({} at λ = 10)"),
    ("map_prior.json", "numbers.rows.3.train", "{:.2f}", "$\\log p(x)$ falls to {}: the prior"),
    ("map_prior.json", "numbers.n_train", "{:d}", "trained 100 epochs on only {} training images"),
    # ---- the introduction's table of run times (rounded to 10 s) ----
    *[(f"{name}.json", "cpu_seconds", "{:.0f}", f"| {figures} | {{}} s |", round10) for name, figures in (
        ("intractable", "guide_intractable.png, guide_mixture.png"), ("reparam", "guide_reparam_variance.png"),
        ("ancestral", "guide_ancestral.png"), ("sigma_x", "guide_sigma_x.png"), ("collapse", "guide_collapse.png"),
        ("traversals", "guide_traversals.png"), ("vae_vs_ae", "guide_vae_vs_ae.png"), ("map_prior", "guide_map.png"))],
    *[(f"{name}.json", ("cpu_seconds", "seconds"), "{}", f"| {figures} | {{}} s |", cpu_and_wall) for name, figures in (
        ("intractable", "guide_intractable.png, guide_mixture.png"), ("reparam", "guide_reparam_variance.png"),
        ("ancestral", "guide_ancestral.png"), ("sigma_x", "guide_sigma_x.png"), ("collapse", "guide_collapse.png"),
        ("traversals", "guide_traversals.png"), ("vae_vs_ae", "guide_vae_vs_ae.png"), ("map_prior", "guide_map.png"))],
    # ---- the exercises of sections 1-3 (their runs' JSON: docs/guide_data/exercises/) ----
    ("exercises/intractable--epochs_1.json", "numbers.images.0.gap", "{:.2f}", "p(z\\mid x))$ are {},"),
    ("exercises/intractable--epochs_1.json", "numbers.images.1.gap", "{:.2f}", "are 0.82,\n   {}, 0.36 and 0.75 nats"),
    ("exercises/intractable--epochs_1.json", "numbers.images.2.gap", "{:.2f}", "2.45, {} and 0.75 nats"),
    ("exercises/intractable--epochs_1.json", "numbers.images.3.gap", "{:.2f}", "0.36 and {} nats for images 0 to 3"),
    ("intractable.json", "numbers.images.0.gap", "{:.2f}", "(after 10 epochs: {}, 0.033"),
    ("intractable.json", "numbers.images.1.gap", "{:.3f}", "(after 10 epochs: 0.20, {}, 0.18"),
    ("intractable.json", "numbers.images.2.gap", "{:.2f}", "0.033, {}, 0.12)"),
    ("intractable.json", "numbers.images.3.gap", "{:.2f}", "0.18, {})"),
    ("intractable.json", "numbers.images.1.gap", "{:.3f}", "(gaps {} and 0.182 nats for images 1 and 2)"),
    ("intractable.json", "numbers.images.2.gap", "{:.3f}", "(gaps 0.033 and {} nats for images 1 and 2)"),
    ("exercises/intractable--epochs_1.json", "numbers.images.1.q_mu", "{:.2f}", "image 1, $q=\\mathcal N({},0.33^2)$"),
    ("exercises/intractable--epochs_1.json", "numbers.images.1.q_sd", "{:.2f}", "$q=\\mathcal N(5.57,{}^2)$ while the true posterior"),
    ("exercises/intractable--epochs_1.json", "numbers.images.1.post_mean", "{:.2f}", "the true posterior has mean {}: the encoder"),
    ("exercises/intractable--epochs_1.json", tuple(f"numbers.images.{i}.post_mean" for i in range(4)), "{:.2f}", "(means {} to", smallest),
    ("exercises/intractable--epochs_1.json", tuple(f"numbers.images.{i}.post_mean" for i in range(4)), "{:.2f}", "to\n   {}), where the prior", largest),
    ("exercises/intractable--epochs_1.json", ("numbers.images.0.naive_mean.-1", "numbers.images.0.exact"), "{:.1f}",
     "image 0 is\n   still {} nats low at $k=10^5$", lambda a, b: b - a),
    ("exercises/intractable--z-high_5.json", ("numbers.high.naive_mean.-1", "numbers.high.reference"), "{:.2f}", "{} nats at $k=10^4$", diff),
    ("exercises/intractable--z-high_5.json", ("numbers.high.naive_mean.0", "numbers.high.reference"), "{:.1f}", "({} at $k=1$, ", diff),
    ("exercises/intractable--z-high_5.json", ("numbers.high.naive_mean.6", "numbers.high.reference"), "{:.1f}", "{} at $k=1000$)", diff),
    ("intractable.json", tuple(f"numbers.images.{i}.naive_sd.0" for i in range(4)), "{:.0f}",
     "over the repeats ({} to", smallest),
    ("intractable.json", tuple(f"numbers.images.{i}.naive_sd.0" for i in range(4)), "{:.0f}",
     "to 136 nats, printed", largest),
    ("intractable.json", "numbers.images.1.post_mean", "{:.3f}", "Image 1's true posterior has mean {} and s.d."),
    ("intractable.json", "numbers.images.1.post_sd", "{:.3f}", "has mean 0.710 and s.d. {}."),
    ("intractable.json", "numbers.images.1.naive_mean.2", "{:.3f}", "printout: {} against"),
    ("intractable.json", "numbers.images.1.exact", "{:.3f}", "against {})"),
    ("intractable.json", ("numbers.images.1.naive_mean.2", "numbers.images.1.exact"), "{:.1f}",
     "still {} nats below $\\log p(x)$", lambda a, b: b - a),
    # ---- the exercises of sections 4-5 ----
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_neg_elbo", "{:.2f}", "Larger: test −ELBO {} against"),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_log_likelihood", "{:.2f}", "against −log p(x) ≈ {}, about", neg),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", ("test_neg_elbo", "test_log_likelihood"), "{:.1f}", "about {} nats (the −ELBO", add),
    ("runs/vae_default.json", ("test_neg_elbo", "test_log_likelihood"), "{:.1f}", "and −log p(x) is {} nats after 10", add),
    ("exercises/train_mnist--epochs_1_--beta_0.5_--eval-images_1000.json", "test_neg_elbo", "{:.2f}", "test −ELBO {} (128.12 at β = 1)"),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_neg_elbo", "{:.2f}", "({} at β = 1)"),
    ("exercises/train_mnist--epochs_1_--beta_0.5_--eval-images_1000.json", "test_log_likelihood", "{:.2f}", "log p(x) ≈ {} (−121.83)"),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_log_likelihood", "{:.2f}", "−122.78 ({})."),
    ("exercises/train_mnist--epochs_1_--beta_0.5_--eval-images_1000.json", "test_reconstruction", "{:.2f}", "reconstruction {} nats against 106.18"),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_reconstruction", "{:.2f}", "nats against {}, KL"),
    ("exercises/train_mnist--epochs_1_--beta_0.5_--eval-images_1000.json", "test_kl", "{:.2f}", "KL\n   {} against 21.94"),
    ("exercises/train_mnist--epochs_1_--eval-images_1000.json", "test_kl", "{:.2f}", "33.36 against {}. β < 1"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500_--n-samples_10.json", "test_neg_elbo", "{:.2f}", "test −ELBO {} against 160.78"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "test_neg_elbo", "{:.2f}", "156.72 against {}, log p(x)"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500_--n-samples_10.json", "test_log_likelihood", "{:.2f}", "log p(x) ≈ {} against"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "test_log_likelihood", "{:.2f}", "against\n   {}: less gradient noise"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500_--n-samples_10.json", "history.1.samples_per_s", "{:.0f}", "$z$:\n   {} images per second"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "history.1.samples_per_s", "{:.0f}", "per second against {}."),
    # ---- the exercises of sections 6-15 ----
    ("vae_vs_ae.json", "numbers.VAE.inside", "{:.0f}", "Section 10's 2-D VAE puts {} % of its test codes", pct),
    ("vae_vs_ae.json", "numbers.prior_inside", "{:.1f}", "<summary>Answer</summary>\n\n   {} % ($1-e^{{-2}}$", pct),
    ("vae_vs_ae.json", "numbers.VAE.code_std.0", "{:.2f}", "(s.d. {} and 1.28 per axis)"),
    ("vae_vs_ae.json", "numbers.VAE.code_std.1", "{:.2f}", "(s.d. 1.29 and {} per axis)"),
    ("reparam.json", "numbers.mnist.ratio_sfb_pw", "{:.0f}", "pathwise\" (×{} with $J=10$)"),
    ("vae_vs_ae.json", "numbers.VAE.inside", "{:.0f}", "within radius 2 ({} % after 15 epochs)", pct),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.inside", "{:.0f}", "<summary>Answer</summary>\n\n   {} %. The codes", pct),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.code_std.0", "{:.2f}", "spread (s.d. {} and 1.31 per axis)"),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.code_std.1", "{:.2f}", "spread (s.d. 0.91 and {} per axis)"),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.code_mean.0", "{:.2f}", "their mean sits at ({}, −2.56)"),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.code_mean.1", "{:.2f}", "their mean sits at (2.71, {})"),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.VAE.code_mean", "{:.1f}", "), {} from the origin", lambda m: (m[0] ** 2 + m[1] ** 2) ** 0.5),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.AE.inside", "{:.0f}", "no such pull, has {} %", pct),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.AE.code_mean.0", "{:.2f}", "mean is at\n   ({}, 7.60)"),
    ("exercises/vae_vs_ae--epochs_1.json", "numbers.AE.code_mean.1", "{:.2f}", "(−17.91, {}))."),
    ("vae_vs_ae.json", ("numbers.VAE.reconstruction", "numbers.AE.reconstruction"), "{:.1f}", "The AE, by {} nats", diff),
    ("vae_vs_ae.json", "numbers.AE.reconstruction", "{:.1f}", "nats ({} against 160.9)"),
    ("vae_vs_ae.json", "numbers.VAE.reconstruction", "{:.1f}", "(157.3 against {})."),
    ("exercises/reparam--z-dim_2.json", "numbers.mnist.ratio_sfb_pw", "{:.1f}", "It falls to ×{} (total variances"),
    ("exercises/reparam--z-dim_2.json", "numbers.mnist.total_variance.score function + baseline", "{:.0f}",
     "(total variances {} with the baseline"),
    ("exercises/reparam--z-dim_2.json", "numbers.mnist.total_variance.pathwise", "{:.1f}", "with the baseline, {} pathwise;"),
    ("exercises/reparam--z-dim_2.json", "numbers.mnist.ratio_sf_pw", "{:,.0f}", "the ratio is ×{})."),
    ("exercises/reparam--batch_10.json", "numbers.mnist.total_variance.pathwise", "{:.0f}", "(pathwise {} against 268;"),
    ("reparam.json", "numbers.mnist.total_variance.pathwise", "{:.0f}", "(pathwise 2692 against {};"),
    ("exercises/reparam--batch_10.json", "numbers.mnist.ratio_sfb_pw", "{:.1f}", "(×{} with the baseline, against"),
    ("reparam.json", "numbers.mnist.ratio_sfb_pw", "{:.0f}", "with the baseline, against\n   ×{};"),
    ("exercises/train_mnist--epochs_3_--warmup-epochs_2_--train-limit_10000_--eval-images_200.json", "history.0.test_kl",
     "{:.1f}", "the test KL is {} nats against 13.2"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "history.0.test_kl", "{:.1f}",
     "nats against {} without"),
    ("exercises/train_mnist--epochs_3_--warmup-epochs_2_--train-limit_10000_--eval-images_200.json",
     "history.0.test_neg_elbo", "{:.1f}", "the test −ELBO is worse, {} against 190.7"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "history.0.test_neg_elbo", "{:.1f}",
     "against {}: the cheap KL"),
    ("exercises/train_mnist--epochs_3_--warmup-epochs_2_--train-limit_10000_--eval-images_200.json",
     "history.1.test_neg_elbo", "{:.1f}", "the warm-up run is ahead, {} against 160.8"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "history.1.test_neg_elbo", "{:.1f}",
     "ahead, 157.0 against {}."),
    ("exercises/train_mnist--epochs_3_--warmup-epochs_2_--train-limit_10000_--eval-images_200.json",
     "history.0.train_neg_elbo", "{:.1f}", "in epoch 1 ({} with warm-up"),
    ("exercises/train_mnist--epochs_2_--train-limit_10000_--eval-images_500.json", "history.0.train_neg_elbo", "{:.1f}",
     "with warm-up, {} without)"),
    ("exercises/train_mnist--epochs_3_--warmup-epochs_2_--train-limit_10000_--eval-images_200.json", "history.0.beta",
     "{}", "(β rising to {})"),
    ("ancestral.json", "numbers.pixel_difference", "{:.1f}", "change ({} % of pixels differ", pct),
    ("ancestral.json", "numbers.entropy", "{:.1f}", "entropy {} nats per image):"),
    ("exercises/ancestral--epochs_1.json", "numbers.pixel_difference", "{:.1f}", "Both grow a lot: {} % and", pct),
    ("exercises/ancestral--epochs_1.json", "numbers.entropy", "{:.1f}", "% and {} nats. A barely"),
    ("exercises/sigma_x--sigmas_3.json", "numbers.sigmas.3.kl", "{:.2f}", "<summary>Answer</summary>\n\n   KL {} nats, 0 active"),
    ("exercises/sigma_x--sigmas_3.json", "numbers.sigmas.3.active", "{:d}", "nats, {} active units: every"),
    ("exercises/sigma_x--sigmas_3.json", "numbers.sigmas.3.sq_err", "{:.2f}", "(squared error {} per"),
    ("sigma_x.json", "numbers.sigmas.1.sq_err", "{:.1f}", "image, against {} at σ_x = 1)"),
    ("exercises/sigma_x--sigmas_3.json", "numbers.sigmas.3.sigma_star", "{:.3f}", "σ_x* of that decoder is {}, far"),
    ("exercises/collapse--sigma-x_0.3_--epochs_10.json", "numbers.summary.final_active.none", "{:d}",
     "All {} in both runs, with a KL"),
    ("exercises/collapse--sigma-x_0.3_--epochs_10.json", "numbers.summary.final_active.warmup", "{:d}",
     "All {} in both runs, with a KL"),
    ("exercises/collapse--sigma-x_0.3_--epochs_10.json", "numbers.summary.final_kl.none", "{:.1f}", "with a KL of {} nats (30.9"),
    ("exercises/collapse--sigma-x_0.3_--epochs_10.json", "numbers.summary.final_kl.warmup", "{:.1f}", "nats ({} with the 10-epoch"),
    ("exercises/collapse--warmup_20.json", "numbers.summary.final_active.warmup", "{:d}", "{} of 20 units remain (13 with"),
    ("collapse.json", "numbers.summary.final_active.warmup", "{:d}", "units remain ({} with the 10-epoch warm-up"),
    ("collapse.json", "numbers.summary.final_active.none", "{:d}", "10-epoch warm-up, {} without)"),
    ("exercises/collapse--warmup_20.json", "numbers.runs.warmup.active", "{}", "switching off at\n   epoch {}, two epochs",
     first_below_20),
    ("exercises/collapse--warmup_20.json", "numbers.summary.final_kl.warmup", "{:.2f}", "the KL ends at {} nats, against"),
    ("exercises/collapse--warmup_20.json", "numbers.summary.final_kl.none", "{:.2f}", "against 5.54 without"),
    ("exercises/collapse--warmup_20.json", "numbers.summary.final_neg_elbo.warmup", "{:.2f}", "slightly worse ({} against"),
    ("exercises/collapse--warmup_20.json", "numbers.summary.final_neg_elbo.none", "{:.2f}", "(741.34 against {})"),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.kl", "{:.2f}", "KL {} nats in all"),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.reconstruction", "{:.2f}", "reconstruction {} nats (126.85"),
    ("traversals.json", "numbers.betas.4.reconstruction", "{:.2f}", "nats ({} at β = 4)"),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.active_units", "{:d}", "still \"{} of 10\""),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.kl_per_unit_sorted.1", "{:.2f}", "({} … 0.01; the"),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.kl_per_unit_sorted.-1", "{:.2f}", "(0.07 … {}; the"),
    ("exercises/traversals--betas_16.json", "numbers.betas.16.kl_per_unit_sorted.0", "{:.2f}", "the strongest {})"),
    ("traversals.json", "numbers.betas.4.kl_per_unit_sorted.-1", "{:.2f}", "(the smallest KL, {} nats)"),
    ("traversals.json", "numbers.betas.4.kl_per_unit_sorted.0", "{:.2f}", "the top row ({} nats) most"),
    ("exercises/map_prior--n-train_5000_--epochs_10_--lambdas_0_0.1_1.json", "numbers.rows.0.train", "{:.2f}",
     "At λ = 0, train {} and test"),
    ("exercises/map_prior--n-train_5000_--epochs_10_--lambdas_0_0.1_1.json", "numbers.rows.0.test", "{:.2f}",
     "and test {} nats: no overfitting"),
    ("exercises/map_prior--n-train_5000_--epochs_10_--lambdas_0_0.1_1.json", "numbers.rows.1.test", "{:.2f}",
     "λ = 0.1 gives {} on the test"),
    ("exercises/map_prior--n-train_5000_--epochs_10_--lambdas_0_0.1_1.json", "numbers.rows.2.test", "{:.2f}",
     "λ = 1 {}: still no λ"),
    ("exercises/map_prior--n-train_5000_--epochs_10_--lambdas_0_0.1_1.json", "numbers.summary.improves", "{}",
     "still no λ improves", none_improves),
    # ---- section 7: reparam.py ----
    ("reparam.json", "numbers.summary.square_mu_sf.0", "{:.0f}", "score function has {} to 495"),
    ("reparam.json", "numbers.summary.square_mu_sf.1", "{:.0f}", "score function has 15 to {} (10 to"),
    ("reparam.json", "numbers.summary.square_mu_sfb.0", "{:.0f}", "({} to 138 with the baseline"),
    ("reparam.json", "numbers.summary.square_mu_sfb.1", "{:.0f}", "(10 to {} with the baseline"),
    ("reparam.json", "numbers.summary.largest_k.cos(k z), d/dmu, k=3.score function", "{:.2f}", "{} against the pathwise"),
    ("reparam.json", "numbers.summary.largest_k.cos(k z), d/dmu, k=3.pathwise", "{:.2f}", "against the pathwise {}."),
    ("reparam.json", "numbers.summary.baseline_hurts", "{}", "the score function's variance in {} of the six toy",
     count_in_words),
    ("reparam.json", "numbers.summary.baseline_hurts.0.score function", "{:.3f}", "{} → 0.223 for"),
    ("reparam.json", "numbers.summary.baseline_hurts.0.score function + baseline", "{:.3f}", "0.177 → {} for"),
    ("reparam.json", "numbers.summary.baseline_hurts.1.score function", "{:.3f}", "{} → 0.431 for"),
    ("reparam.json", "numbers.summary.baseline_hurts.1.score function + baseline", "{:.3f}", "0.324 → {} for"),
    ("reparam.json", "numbers.summary.baseline_hurts.2.score function", "{:.3f}", "{} → 1.266 for"),
    ("reparam.json", "numbers.summary.baseline_hurts.2.score function + baseline", "{:.3f}", "0.836 → {} for"),
    ("reparam.json", "numbers.mnist.total_variance.pathwise", "{:.0f}", "is **{} pathwise**"),
    ("reparam.json", "numbers.mnist.total_variance.score function + baseline", "{:.1f}", "**{}·10³ for the score",
     thousands),
    ("reparam.json", "numbers.mnist.ratio_sfb_pw", "{:.0f}", "with a per-example baseline (×{})**"),
    ("reparam.json", "numbers.mnist.total_variance.score function", "{:.1f}", "**{}·10⁶ without one", millions),
    ("reparam.json", "numbers.mnist.ratio_sf_pw", "{:,.0f}", "without one (×{})**"),
    ("reparam.json", "numbers.mnist.ratio_sfb_pw", "{:.0f}", "still wins by a factor of {}:"),
]


@lru_cache(maxsize=None)
def _json(name: str) -> dict:
    path = RUNS / name.split("/", 1)[1] if name.startswith("runs/") else DATA / name
    return json.loads(path.read_text())


def _lookup(record, key: str):
    """``record`` at the dotted ``key``; a part that is a whole key of the current dict wins over splitting."""
    value, rest = record, key
    while rest:
        if isinstance(value, dict):
            # the longest prefix of rest that is a key (keys may contain dots, e.g. "0.1")
            for cut in sorted({len(rest)} | {i for i, c in enumerate(rest) if c == "."}, reverse=True):
                if rest[:cut] in value:
                    value, rest = value[rest[:cut]], rest[cut + 1:]
                    break
            else:
                raise KeyError(f"{key!r}: no key {rest!r} in {sorted(value)}")
        else:
            head, _, rest = rest.partition(".")
            value = value[int(head)]
    return value


@lru_cache(maxsize=None)
def _guide() -> str:
    """The guide's text with its typographic minus (U+2212) read as "-", as Python formats a negative number."""
    return GUIDE.read_text().replace("\u2212", "-")


def _ids():
    return [f"{q[0]}:{'+'.join(q[1]) if isinstance(q[1], tuple) else q[1]}:{i}" for i, q in enumerate(QUOTES)]


@pytest.mark.parametrize("row", QUOTES, ids=_ids())
def test_guide_quotes_the_scripts_number(row):
    name, key, fmt, text, *transform = row
    keys = key if isinstance(key, tuple) else (key,)
    values = [_lookup(_json(name), k) for k in keys]
    value = transform[0](*values) if transform else values[0]
    number = fmt.format(value)
    expected = text.format(number).replace("\u2212", "-")
    guide = _guide()
    if expected not in guide:
        # point at the sentence: the text around the first fixed piece of the template
        anchor = max(text.split("{}"), key=len).strip()
        i = guide.find(anchor)
        near = guide[max(0, i - 80): i + len(anchor) + 80] if i >= 0 else "(the text around it is gone too)"
        pytest.fail(f"docs/guide.md should quote {name} {key} = {value!r} as {number!r} in {expected!r}; "
                    f"near it the guide has: {near!r}")


# ---- numbers of the exercises' code snippets: computed here with the library, as the snippet does ----
def _kl(m, s, mp, sp):
    import numpy as np

    from npvae import distributions as dist
    lv = lambda sd: np.array([[2 * np.log(sd)]])                      # noqa: E731
    return float(dist.kl_normal(np.array([[m]]), lv(s), np.array([[mp]]), lv(sp))[0])


def _log_pz_mean():
    import numpy as np

    from npvae import distributions as dist
    return float(dist.standard_normal_log_prob(np.random.default_rng(0).standard_normal((100000, 20))).mean())


def _toy(s, x2):
    import numpy as np

    from demos.guide.intractable import toy_mixture_density
    return float(toy_mixture_density(np.array([0.0]), np.array([x2]), s=s)[0])


def _prior_mass_near(mean, sd):
    from scipy.stats import norm
    return float(norm.cdf(mean + 2 * sd) - norm.cdf(mean - 2 * sd))


@lru_cache(maxsize=None)
def _mc_spread():
    """Section 5's exercise 1: the s.d. of the L-sample estimate of E_q[log p(x|z)], L = 1, 10, 100."""
    import numpy as np

    from npvae import VAE
    from npvae import distributions as dist
    rng = np.random.default_rng(0)
    model = VAE(784, 20, rng=rng, dtype=np.float64)
    x = (rng.random((1, 784)) < 0.1).astype(np.float64)
    mu, logvar = model.encode(x)
    out = {}
    for L in (1, 10, 100):
        est = []
        for _ in range(300):
            z = dist.reparameterize(mu, logvar, dist.sample_eps((L, 1, 20), rng=rng, dtype=np.float64))
            o = model.decoder.forward(z.reshape(L, 20)).reshape(L, 1, 784)
            est.append(model.likelihood.log_prob(x, o).mean(axis=0)[0])
        out[L] = (float(np.mean(est)), float(np.std(est)))
    return out


def _draws_vs_mean():
    """Section 11's exercise 2: the largest pixel difference between the mean of 10,000 draws and pi."""
    import numpy as np

    from npvae import VAE
    model = VAE(784, 20, rng=np.random.default_rng(0))
    pi = model.decode(np.random.default_rng(1).standard_normal((1, 20)).astype(np.float32))
    draws = np.random.default_rng(2).random((10000, 784)) < pi
    return float(np.abs(draws.mean(0) - pi[0]).max())


#: (what, function computing the number, format, guide text with {})
COMPUTED = [
    ("log p(0), J = 20", lambda: -10 * __import__("math").log(2 * __import__("math").pi), "{:.2f}",
     "{} and about −28.38"),
    ("mean log p(z) over 1e5 draws", _log_pz_mean, "{:.3f}", "(printed: {})"),
    ("KL(N(0, 0.5²) || N(0, 1))", lambda: _kl(0, 0.5, 0, 1), "{:.3f}", "{} and 0.807 nats"),
    ("KL(N(0, 1) || N(0, 0.5²))", lambda: _kl(0, 1, 0, 0.5), "{:.3f}", "0.318 and {} nats"),
    ("KL(N(2, 1) || N(0, 1))", lambda: _kl(2, 1, 0, 1), "{:.1f}", "All three are {} nats"),
    ("KL(N(0, 1) || N(2, 1))", lambda: _kl(0, 1, 2, 1), "{:.1f}", "All three are {} nats"),
    ("toy p(x), s = 0.15, on the curve", lambda: _toy(0.15, 0.0), "{:.3f}", "$s=0.15$: {} on the curve"),
    ("toy p(x), s = 0.15, off the curve", lambda: _toy(0.15, 1.0), "{:.4f}", "against {} off it"),
    ("toy p(x), s = 0.5, on the curve", lambda: _toy(0.5, 0.0), "{:.3f}", "$s=0.5$: {}\n   against"),
    ("toy p(x), s = 0.5, off the curve", lambda: _toy(0.5, 1.0), "{:.3f}", "against 0.095. Narrow"),
    ("prior mass near image 1's posterior", lambda: _prior_mass_near(0.710, 0.099), "{:.2f}", "$f\\approx{}$"),
    ("chance that 10 draws miss it", lambda: (1 - _prior_mass_near(0.710, 0.099)) ** 10, "{:.2f}",
     "$(1-f)^{{10}}\\approx{}$"),
    ("steps per epoch", lambda: __import__("npvae").data.n_batches(60000, 128), "{:d}", "{} steps"),
    ("MC s.d., L = 1", lambda: _mc_spread()[1][1], "{:.2f}", "As $1/\\sqrt L$: s.d. {}, 0.80"),
    ("MC s.d., L = 10", lambda: _mc_spread()[10][1], "{:.2f}", "s.d. 2.78, {} and 0.27"),
    ("MC s.d., L = 100", lambda: _mc_spread()[100][1], "{:.2f}", "0.80 and {} nats"),
    ("MC mean, L = 1", lambda: _mc_spread()[1][0], "{:.2f}", "noise ({}, −550.38"),
    ("MC mean, L = 10", lambda: _mc_spread()[10][0], "{:.2f}", "−550.40, {} and"),
    ("MC mean, L = 100", lambda: _mc_spread()[100][0], "{:.2f}", "and {}: unbiased"),
    ("mean of draws vs pi", _draws_vs_mean, "{:.3f}", "the largest pixel difference is {} for 10,000"),
]


@pytest.mark.parametrize("what, compute, fmt, text", COMPUTED, ids=[c[0] for c in COMPUTED])
def test_guide_quotes_what_the_snippets_compute(what, compute, fmt, text):
    expected = text.format(fmt.format(compute())).replace("\u2212", "-")
    assert expected in _guide(), f"{what}: expected {expected!r} in docs/guide.md"


def test_every_guide_data_file_is_read():
    """A JSON file in docs/guide_data that no row reads is a script whose numbers the guide no longer quotes
    (or a row that is missing). Files written by scripts of other sections are listed in OTHER_FILES."""
    used = {q[0] for q in QUOTES if not q[0].startswith("runs/")}
    present = {p.name for p in DATA.glob("*.json")} if DATA.is_dir() else set()
    mine = {f"{s}.json" for s in MY_SCRIPTS}
    assert (present & mine) <= used, sorted((present & mine) - used)


#: the scripts whose numbers this file checks (other guide scripts have their own tests)
MY_SCRIPTS = ("intractable", "reparam", "ancestral", "sigma_x", "collapse", "traversals", "vae_vs_ae", "map_prior")


def test_every_script_needs_under_a_minute_of_cpu():
    """The introduction says so; a script that grows past it must say its time instead."""
    for name in MY_SCRIPTS:
        record = _json(f"{name}.json")
        assert record["cpu_seconds"] < 60, (name, record["cpu_seconds"])


def test_lookup_and_format_behave():
    record = {"a": {"0.1": [1.0, {"b": 2.5}]}, "x.y": 3}
    assert _lookup(record, "a.0.1.1.b") == 2.5
    assert _lookup(record, "x.y") == 3
    with pytest.raises(KeyError, match="no key"):
        _lookup(record, "a.missing")
    assert re.fullmatch(r"-?\d+\.\d{2}", "{:.2f}".format(-97.3404))
