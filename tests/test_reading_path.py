"""The reading path of one training step stays short.

A learner follows one step of the default VAE through the code: a batch from
``data.minibatches``, ``VAE.forward``, ``VAE.backward``, ``Adam.step``. This test runs that
step under ``sys.setprofile`` and counts what the learner would have to read: the npvae
files and the npvae functions it runs through, and the switches between files (calls from
one file into a function of another, the step's own four calls included). Bounds:
6 files, 35 functions, 40 switches. At commit b307645 (before the models held their own
chain rule) the same count gave 8 files, 55 functions and 70 switches.

If a change makes this fail, the step got longer to read: inline the new indirection, or
raise the bound in a commit that says why the longer path is worth it.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import npvae
from npvae import data
from npvae.models import VAE
from npvae.optim import Adam

ROOT = os.path.dirname(npvae.__file__)
MAX_FILES, MAX_FUNCTIONS, MAX_SWITCHES = 6, 35, 40


def _file(code) -> str | None:
    """The npvae file (relative path) a code object belongs to, or None outside npvae."""
    name = code.co_filename
    return os.path.relpath(name, ROOT) if name.startswith(ROOT + os.sep) else None


def trace_one_step():
    """Run one default training step under a profile hook; return (files, functions, switches)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
    model = VAE(784, 20, (400,), rng=np.random.default_rng(1))
    opt = Adam(model.params, lr=1e-3)

    def step():
        x = next(data.minibatches(images, 128, rng=rng))
        model.forward(x, rng=rng)
        opt.step(model.backward())

    step()  # once untraced: nothing first-time-only is counted
    files, functions, switches = set(), set(), [0]

    def hook(frame, event, arg):
        if event != "call":
            return
        here = _file(frame.f_code)
        if here is None:
            return
        files.add(here)
        functions.add((here, frame.f_code.co_qualname))
        caller = _file(frame.f_back.f_code) if frame.f_back is not None else None
        if caller != here:  # from another npvae file, or from the step itself into npvae
            switches[0] += 1

    sys.setprofile(hook)
    try:
        step()
    finally:
        sys.setprofile(None)
    return files, functions, switches[0]


def test_one_training_step_reads_in_few_files_and_functions():
    files, functions, switches = trace_one_step()
    listing = "\n".join(f"  {f}: {q}" for f, q in sorted(functions))
    assert len(files) <= MAX_FILES, f"{len(files)} files: {sorted(files)}"
    assert len(functions) <= MAX_FUNCTIONS, f"{len(functions)} functions:\n{listing}"
    assert switches <= MAX_SWITCHES, f"{switches} switches between files"
    # the path is the one the README's tour walks, and the model's own file holds the math
    assert {"models/vae.py", "distributions.py", "layers.py", "optim.py", "data.py"} <= files
    assert ("models/vae.py", "VAE.forward") in functions and ("models/vae.py", "VAE.backward") in functions
    assert ("optim.py", "Adam.step") in functions


def test_the_counter_sees_a_longer_path():
    """The hook counts real calls: routing the KL through another npvae function changes what it sees."""
    files, functions, switches = trace_one_step()
    from npvae import distributions

    original = distributions.gaussian_kl
    distributions.gaussian_kl = lambda mu, logvar: distributions.kl_normal(mu, logvar, 0.0, 0.0)
    try:
        files2, functions2, switches2 = trace_one_step()
    finally:
        distributions.gaussian_kl = original
    assert ("distributions.py", "gaussian_kl") in functions and ("distributions.py", "kl_normal") not in functions
    assert ("distributions.py", "kl_normal") in functions2 and ("distributions.py", "gaussian_kl") not in functions2
    assert files2 == files and len(functions2) == len(functions)
    assert switches2 == switches  # vae.py -> the test's stand-in is not npvae; the stand-in -> kl_normal is one
