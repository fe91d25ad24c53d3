"""Memory is bounded by what an input is, not what it claims (issue #21, item 3).

Every case runs in one subprocess whose address space is limited to 2 GB
(``resource.setrlimit(RLIMIT_AS)``): small files that claim gigabytes (gzip bombs, a
checkpoint member declaring 8 TB, a config saying ``z_dim`` = 10^9) and size flags far
beyond memory must each give the one-line error (exit code 2) and never a MemoryError.
Before the fix each of them ended in a MemoryError traceback, took gigabytes, or was
accepted. The inputs are built once, in this process; the subprocess runs the cases in
turn and reports each as JSON.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2 << 30
GB_ZEROS = 1_200_000_000  # what the IDX bombs decompress to: more than the 2 GB limit leaves to a run (< 1 GiB),
#                           and a ratio (~930:1) every zlib reaches with room to spare below the 1040:1 bound

DRIVER = r"""
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (%(limit)d, %(limit)d))
sys.argv[0] = "train_mnist.py"
from demos import train_mnist as demo
from benchmarks import reproduce_iwae
results = {}
for name, (script, argv) in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = (demo.main if script == "demo" else reproduce_iwae.main)(argv)
            except SystemExit as exc:
                code = exc.code
        results[name] = {"code": code, "err": err.getvalue(), "memory_error": False}
    except MemoryError:
        results[name] = {"code": None, "err": err.getvalue(), "memory_error": True}
    except BaseException as exc:
        results[name] = {"code": None, "err": err.getvalue() + repr(exc), "memory_error": False}
print(json.dumps(results))
"""


def _gzip_member(data_chunks) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    return b"".join([*(c.compress(chunk) for chunk in data_chunks), c.flush()])


def _idx_header(dims) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _npy(array_header: bytes, payload_chunks) -> bytes:
    return array_header + b"".join(payload_chunks)


def _npy_header(shape, descr="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _copy_with(src: Path, dst: Path, *, meta=None, members=()) -> Path:
    """``src`` checkpoint copied to ``dst``/checkpoint.npz with ``meta`` changed and extra (name, writer) members."""
    dst.mkdir(parents=True)
    target = dst / "checkpoint.npz"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "__meta__.npy" and meta is not None:
                m = meta(json.loads(str(np.load(io.BytesIO(data)))))
                buf = io.BytesIO()
                np.save(buf, np.array(json.dumps(m)))
                data = buf.getvalue()
            out.writestr(name, data)
        for name, write in members:
            with out.open(name, "w", force_zip64=True) as f:
                write(f)
    return dst


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("memory")
    (base / "data").mkdir()
    data = write_fake_mnist(base / "data", 300, 100)
    flags = ["--data-dir", str(data), "--hidden", "16", "--latent-dim", "3", "--batch-size", "50", "--eval-k", "2",
             "--dtype", "float64"]
    # a trained run to tamper with
    from demos import train_mnist as demo
    trained = base / "trained"
    assert demo.main([*flags, "--out", str(trained), "--epochs", "1"]) == 0
    ckpt = trained / "checkpoint.npz"

    zeros = _gzip_member(b"\0" * (1 << 24) for _ in range(GB_ZEROS >> 24))  # ~1.2 MB of gzip, 1.2 GB of zeros
    bombs = {}
    for case, dims in (("idx_bomb_header_disagrees", (10, 28, 28)),
                       ("idx_bomb_header_agrees", (GB_ZEROS // 784, 28, 28)),
                       ("idx_header_claims_more_than_gzip_holds", (4_000_000_000 // 784, 28, 28))):
        folder = base / case
        folder.mkdir()
        for f in data.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        body = zeros if case != "idx_header_claims_more_than_gzip_holds" else _gzip_member([b"\0" * 1000])
        (folder / "train-images-idx3-ubyte.gz").write_bytes(_gzip_member([_idx_header(dims)]) + body)
        bombs[case] = folder

    def zeros_member(shape):
        def write(f):
            f.write(_npy_header(shape))
            for _ in range(int(np.prod(shape)) * 8 >> 24):
                f.write(b"\0" * (1 << 24))
        return write

    def lying_member(f):
        f.write(_npy_header((10 ** 12,)))
        f.write(b"\0" * 64)

    big = (256 << 20) // 8
    tampered = {
        "ckpt_unknown_member_of_256mb": _copy_with(ckpt, base / "c1", members=[("array/junk.npy", zeros_member((big,)))]),
        "ckpt_extra_parameter_of_256mb": _copy_with(ckpt, base / "c2",
                                                    members=[("param/extra.npy", zeros_member((big,)))]),
        "ckpt_npy_header_declares_1e12": _copy_with(ckpt, base / "c3", members=[("optim/junk.npy", lying_member)]),
        "ckpt_z_dim_1e6": _copy_with(ckpt, base / "c4", meta=lambda m: {**m, "model_config": {
            **m["model_config"], "z_dim": 10 ** 6}}),
        "ckpt_z_dim_1e9": _copy_with(ckpt, base / "c5", meta=lambda m: {**m, "model_config": {
            **m["model_config"], "z_dim": 10 ** 9}}),
        "ckpt_flow_length_1e7": _copy_with(ckpt, base / "c6", meta=lambda m: {**m, "model_config": {
            **m["model_config"], "kind": "flow", "flow": "planar", "flow_length": 10 ** 7, "context_dim": 0,
            "flow_hidden": None}}),
    }
    cases = {name: ("demo", ["--data-dir", str(folder), "--out", str(base / "out" / name), "--epochs", "1"])
             for name, folder in bombs.items()}
    for name, folder in tampered.items():
        cases[name] = ("demo", ["--data-dir", str(data), "--out", str(folder), "--resume", "--eval-k", "2"])
    cases["ckpt_z_dim_1e6_through_compare"] = ("demo", [*flags, "--out", str(base / "cmp"), "--compare",
                                                        str(tampered["ckpt_z_dim_1e6"])])
    for flag, value, model in (("--flow-length", 10 ** 7, "flow"), ("--latent-dim", 10 ** 9, "vae"),
                               ("--hidden", 10 ** 9, "vae"), ("--k", 10 ** 9, "iwae"), ("--n-samples", 10 ** 9, "vae"),
                               ("--eval-k", 10 ** 10, "vae"), ("--batch-size", 10 ** 10, "vae")):
        cases[f"flag {flag}"] = ("demo", ["--data-dir", str(data), "--out", str(base / "f" / flag), "--model", model,
                                          flag, str(value)])
    for flag, value in (("--eval-k", 10 ** 13), ("--batch-size", 10 ** 9)):
        cases[f"reproduce_iwae {flag}"] = ("reproduce", ["--model", "iwae5", flag, str(value),
                                                         "--out", str(base / "r")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NPVAE_DATA_DIR": str(data)}
    proc = subprocess.run([sys.executable, "-c", DRIVER % {"limit": LIMIT}, json.dumps(cases)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


EXPECTED = {
    "idx_bomb_header_disagrees": "trailing bytes after the data: dimensions (10, 28, 28) of 1-byte items need 7840 "
                                 "data bytes, got 1056416 or more",
    "idx_bomb_header_agrees": "data bytes (npvae.data.MAX_IDX_BYTES, and what fits in memory), got a header declaring",
    "idx_header_claims_more_than_gzip_holds": "(one decompresses to at most 1040 times its size), got a header declaring",
    "ckpt_unknown_member_of_256mb": "expected entries named __meta__, param/..., optim/..., array/perm, "
                                    "got 'array/junk.npy'",
    "ckpt_extra_parameter_of_256mb": "parameter 'extra': expected no such parameter (this model's), got shape",
    "ckpt_npy_header_declares_1e12": "expected its data in the file, got a header declaring shape (1000000000000,)",
    "ckpt_z_dim_1e6": "model_config 'z_dim': expected sizes from 0 to 784 (the largest size of the",
    "ckpt_z_dim_1e9": "model_config 'z_dim': expected sizes from 0 to 784",
    "ckpt_flow_length_1e7": "model_config 'flow_length': expected sizes from 0 to 784",
    "ckpt_z_dim_1e6_through_compare": "model_config 'z_dim': expected sizes from 0 to 784",
    "flag --flow-length": "--flow-length: expected an integer <= ",
    "flag --latent-dim": "--latent-dim: expected an integer <= ",
    "flag --hidden": "--hidden: expected an integer <= ",
    "flag --k": "--k: expected an integer <= ",
    "flag --n-samples": "--n-samples: expected an integer <= ",
    "flag --eval-k": "--eval-k: expected an integer <= ",
    "flag --batch-size": "--batch-size: expected an integer <= ",
    "reproduce_iwae --eval-k": "--eval-k: expected an integer <= ",
    "reproduce_iwae --batch-size": "--batch-size: expected an integer <= ",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_one_line_error_under_a_2gb_address_space(results, case):
    r = results[case]
    assert not r["memory_error"], f"{case}: MemoryError\n{r['err']}"
    assert r["code"] == 2, r
    lines = [line for line in r["err"].splitlines() if line.strip() and not line.startswith("usage:")
             and not line.startswith("  ")]
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in r["err"], r["err"]
    assert EXPECTED[case] in lines[0], lines[0]
    if case.startswith(("flag", "reproduce")):
        assert "of memory with the sizes before it as given), got " in lines[0]
