"""Tests for npvae.data: IDX parsing, checksums, download (local http.server), loading, batching.

Everything except the real-MNIST tests uses tiny files written into tmp_path; downloads go
to a ThreadingHTTPServer on 127.0.0.1 started by a fixture (the machine may be offline).
"""

import functools
import gzip
import hashlib
import os
import re
import socket
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import data
from npvae.data import (
    DATASETS,
    ChecksumError,
    DataNotFoundError,
    batch_to_float,
    binarize_static,
    download,
    load_mnist,
    minibatches,
    n_batches,
    read_idx,
    resolve_data_dir,
    to_float,
    verify_checksum,
    write_idx,
)

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def esc(path) -> str:
    return re.escape(str(path))


# --------------------------------------------------------------------------- helpers

def make_fake_dataset(folder: Path, n_train=6, n_test=4, seed=0) -> dict:
    """Write four tiny valid MNIST-format files into ``folder``; return the arrays by name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(folder / name, arr)
    return arrays


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def idx_bytes(code: int, dims, payload: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


# ------------------------------------------------------------------------- IDX parsing

@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype,shape", [
    (np.uint8, (3, 28, 28)), (np.uint8, (5,)), (np.int8, (2, 3)), (np.int16, (4, 2)),
    (np.int32, (2, 2, 2, 2)), (np.float32, (7,)), (np.float64, (3, 1)),
])
def test_idx_round_trip(tmp_path, rng, suffix, dtype, shape):
    arr = (rng.normal(size=shape) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writeable copy


def test_idx_known_bytes_big_endian(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(0x0B, (2,), b"\x01\x02\xff\xfe"))
    np.testing.assert_array_equal(read_idx(path), np.array([0x0102, -2], dtype=np.int16))


def test_gzip_detected_by_magic_not_extension(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "zipped.idx", arr, compress=True)), arr)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "plain.gz", arr, compress=False)), arr)


@pytest.mark.parametrize("content,message", [
    (b"", "header of at least 4 bytes"),
    (b"\x00\x00\x08", "header of at least 4 bytes"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "magic number .*got 01 00"),
    (b"PK\x03\x04" + b"\x00" * 20, "magic number"),
    (idx_bytes(0x07, (1,), b"\x00"), "type code .*got 0x07"),
    (idx_bytes(0x08, (), b""), "rank between 1 and 4, got 0"),
    (idx_bytes(0x08, (1,) * 5, b"\x00"), "rank between 1 and 4, got 5"),
    (idx_bytes(0x08, (3, 0), b""), "dimension > 0"),
    (idx_bytes(0x08, (2, 3), b"\x00" * 5), "truncated data.*need 6 data bytes, got 5"),
    (idx_bytes(0x0C, (2,), b"\x00" * 7), "truncated data.*need 8 data bytes, got 7"),
    (idx_bytes(0x08, (2, 3), b"\x00" * 7), "trailing bytes.*need 6 data bytes, got 7"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
])
@pytest.mark.parametrize("compressed", [False, True])
def test_malformed_idx_raises_value_error_naming_file(tmp_path, content, message, compressed):
    path = tmp_path / "bad-file.idx"
    path.write_bytes(gzip.compress(content) if compressed else content)
    with pytest.raises(ValueError, match=esc(path)) as info:
        read_idx(path)
    assert re.search(message, str(info.value))
    assert "download it again" in str(info.value)


def _valid_gz(n=50) -> bytes:
    rng = np.random.default_rng(1)
    return gzip.compress(idx_bytes(0x08, (n, 28, 28), rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()))


@pytest.mark.parametrize("corrupt", ["middle", "truncated", "garbage_after_header", "bad_crc", "bad_length"])
def test_corrupted_gzip_raises_value_error_naming_file(tmp_path, corrupt):
    good = bytearray(_valid_gz())
    if corrupt == "middle":
        good[len(good) // 2: len(good) // 2 + 16] = b"\xAA" * 16
    elif corrupt == "truncated":
        good = good[: len(good) * 2 // 3]
    elif corrupt == "garbage_after_header":
        good = good[:10] + os.urandom(200)
    elif corrupt == "bad_crc":
        good[-8] ^= 0xFF
    else:  # ISIZE field of the trailer
        good[-1] ^= 0x01
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(good))
    with pytest.raises(ValueError, match=esc(path)) as info:
        read_idx(path)
    assert "gzip" in str(info.value) or "data bytes" in str(info.value)


def test_missing_idx_file(tmp_path):
    path = tmp_path / "nope.gz"
    with pytest.raises(FileNotFoundError, match=esc(path) + ".*not found.*download"):
        read_idx(path)


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="array: expected dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.uint16))
    with pytest.raises(TypeError, match="array: expected a numpy.ndarray"):
        write_idx(tmp_path / "a", [1, 2])
    with pytest.raises(ValueError, match="array: expected rank"):
        write_idx(tmp_path / "a", np.zeros((0, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------- fuzzing

@st.composite
def idx_like_bytes(draw):
    """Random bytes, or a valid small IDX file mutated in its header/body, maybe gzipped."""
    if draw(st.integers(0, 4)) == 0:
        blob = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            blob = b"\x1f\x8b" + blob  # looks like gzip
        return blob
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]))
    dims = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    n = int(np.prod(dims)) * itemsize
    buf = bytearray(idx_bytes(code, dims, draw(st.binary(min_size=n, max_size=n))))
    gzip_first = draw(st.booleans())
    if gzip_first:
        buf = bytearray(gzip.compress(bytes(buf), mtime=0))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dims", "code", "rank", "cut"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and buf:
            del buf[pos: pos + draw(st.integers(1, 4))]
        elif op == "dims" and len(buf) >= 8 and not gzip_first:
            buf[4:8] = struct.pack(">I", draw(st.sampled_from([0, 1, 7, 2**31, 2**32 - 1])))
        elif op == "code" and len(buf) >= 3 and not gzip_first:
            buf[2] = draw(st.integers(0, 255))
        elif op == "rank" and len(buf) >= 4 and not gzip_first:
            buf[3] = draw(st.integers(0, 255))
        elif op == "cut":
            buf = buf[:pos]
    if not gzip_first and draw(st.booleans()):
        buf = bytearray(gzip.compress(bytes(buf), mtime=0))
    return bytes(buf)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.idx"


@settings(max_examples=1000)
@given(blob=idx_like_bytes())
def test_fuzz_read_idx_raises_only_value_error(fuzz_path, blob):
    fuzz_path.write_bytes(blob)
    try:
        out = read_idx(fuzz_path)
    except ValueError as exc:
        assert str(fuzz_path) in str(exc)
    else:
        assert isinstance(out, np.ndarray) and 1 <= out.ndim <= 4 and out.size > 0


# ------------------------------------------------------------------------------- checksums

@pytest.fixture
def fake_registry(monkeypatch):
    """Register a dataset 'tiny' whose checksum table the test fills in."""
    entry = {"mirrors": ("http://127.0.0.1:9/",), "files": {}}
    monkeypatch.setitem(DATASETS, "tiny", entry)
    return entry


def test_checksum_accepts_good_and_rejects_modified_file(tmp_path, fake_registry):
    arrays = make_fake_dataset(tmp_path)
    path = tmp_path / FILES[0]
    good = sha256(path)
    fake_registry["files"] = {name: {"sha256": sha256(tmp_path / name)} for name in arrays}
    assert verify_checksum(path, "tiny") == good
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=esc(path) + f".*expected sha256 {good}.*got [0-9a-f]{{64}}"):
        verify_checksum(path, "tiny")


def test_checksum_md5_only_and_unknown_file(tmp_path, fake_registry):
    path = tmp_path / FILES[1]
    write_idx(path, np.arange(5, dtype=np.uint8))
    fake_registry["files"] = {FILES[1]: {"md5": "0" * 32}}
    with pytest.raises(ValueError, match="expected md5 0{32}"):
        verify_checksum(path, "tiny")
    fake_registry["files"][FILES[1]]["md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    verify_checksum(path, "tiny")
    with pytest.raises(ValueError, match="filename: expected one of.*got 'other.gz'"):
        verify_checksum(path, "tiny", filename="other.gz")


def test_dataset_table():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for entry in DATASETS.values():
        assert tuple(entry["files"]) == FILES
    assert DATASETS["mnist"]["mirrors"][0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert DATASETS["mnist"]["files"][FILES[0]]["md5"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert DATASETS["fashion-mnist"]["files"][FILES[0]]["md5"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


# -------------------------------------------------------------------------------- download

class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises the full length but sends half and hangs up."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = Path(self.translate_path("/good/" + self.path[len("/short/"):])).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(served root folder, base URL) of a local HTTP server; 'good/' holds a valid fake dataset."""
    root = tmp_path / "served"
    arrays = make_fake_dataset(root / "good")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", arrays
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def tiny(server, fake_registry):
    """The 'tiny' dataset served by ``server``, with checksums of the good files."""
    root, base, arrays = server
    fake_registry["files"] = {n: {"sha256": sha256(root / "good" / n)} for n in FILES}
    fake_registry["mirrors"] = (base + "good/",)
    return root, base, arrays


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_then_load(tiny, tmp_path):
    _, _, arrays = tiny
    target = tmp_path / "target" / "nested"
    assert download("tiny", data_dir=target, progress=False) == target
    assert leftovers(target) == sorted(FILES)
    for split, (img, lbl) in data.SPLITS.items():
        x, y = load_mnist(split, dataset="tiny", data_dir=target, download=False)
        np.testing.assert_array_equal(x, arrays[img])
        np.testing.assert_array_equal(y, arrays[lbl])


def test_load_mnist_downloads_missing_files(tiny, tmp_path, capsys):
    x, y = load_mnist("test", dataset="tiny", data_dir=tmp_path / "t")
    assert x.shape == (4, 28, 28) and y.shape == (4,)
    assert leftovers(tmp_path / "t") == sorted(data.SPLITS["test"])  # only what the split needs


def test_download_progress_on_stderr(tiny, tmp_path, capsys):
    download("tiny", data_dir=tmp_path / "t", progress=True)
    err = capsys.readouterr().err
    for name in FILES:
        assert re.search(re.escape(name) + r": 100%", err)
    download("tiny", data_dir=tmp_path / "u", progress=False)
    assert capsys.readouterr().err == ""


def test_present_files_are_not_downloaded_again(tiny, tmp_path):
    target = download("tiny", data_dir=tmp_path / "t", progress=False)
    before = {n: (target / n).stat().st_mtime_ns for n in FILES}
    download("tiny", data_dir=target, mirrors=[closed_port_url()], progress=False)  # offline: fine
    assert {n: (target / n).stat().st_mtime_ns for n in FILES} == before


def test_corrupted_download_rejected_and_nothing_left(tiny, tmp_path):
    root, base, _ = tiny
    (root / "bad").mkdir()
    for name in FILES:
        blob = bytearray((root / "good" / name).read_bytes())
        if name == FILES[2]:
            blob[30] ^= 0x40
        (root / "bad" / name).write_bytes(bytes(blob))
    target = tmp_path / "t"
    with pytest.raises(ValueError, match=re.escape(FILES[2]) + ".*expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}"):
        download("tiny", data_dir=target, mirrors=[base + "bad/"], progress=False)
    assert leftovers(target) == sorted(FILES[:2])  # no final file, no temp file for FILES[2]
    # a corrupt first mirror falls through to a good second one
    download("tiny", data_dir=target, mirrors=[base + "bad/", base + "good/"], progress=False)
    assert leftovers(target) == sorted(FILES)


def test_partial_download_leaves_nothing(tiny, tmp_path):
    _, base, _ = tiny
    target = tmp_path / "t"
    with pytest.raises(DataNotFoundError, match="incomplete download"):
        download("tiny", data_dir=target, mirrors=[base + "short/"], progress=False)
    assert leftovers(target) == []


def test_404_mirror_falls_through_to_next(tiny, tmp_path):
    _, base, _ = tiny
    target = download("tiny", data_dir=tmp_path / "t", mirrors=[base + "missing/", base + "good"],
                      progress=False)
    assert leftovers(target) == sorted(FILES)


def test_offline_gives_clear_error_listing_files(tiny, tmp_path):
    target = tmp_path / "t"
    with pytest.raises(DataNotFoundError) as info:
        download("tiny", data_dir=target, mirrors=[closed_port_url()], progress=False, timeout=5)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for name in FILES:
        assert name in msg
    assert str(target) in msg and "NPVAE_DATA_DIR" in msg and "--data-dir" in msg
    assert "Connection" in msg or "refused" in msg
    assert leftovers(target) == []


def test_download_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset: expected one of 'mnist', 'fashion-mnist'.*got 'cifar'"):
        download("cifar", data_dir=tmp_path)
    with pytest.raises(TypeError, match="mirrors"):
        download("mnist", data_dir=tmp_path, mirrors="http://x/")
    with pytest.raises(ValueError, match="timeout"):
        download("mnist", data_dir=tmp_path, timeout=0)


# ------------------------------------------------------------------------ folders, loading

def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(dataset="fashion-mnist") == tmp_path / "env" / "fashion-mnist"
    monkeypatch.delenv("NPVAE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(dataset="fashion-mnist") == tmp_path / "home" / ".cache" / "npvae" / "fashion-mnist"
    with pytest.raises(TypeError, match="data_dir"):
        resolve_data_dir(3)


@pytest.fixture
def local(tmp_path):
    folder = tmp_path / "mine"
    return folder, make_fake_dataset(folder)


def test_load_local_folder_and_unzipped_copies(local):
    folder, arrays = local
    x, y = load_mnist("train", data_dir=folder, download=False)
    np.testing.assert_array_equal(x, arrays[FILES[0]])
    for name in FILES[2:]:  # users may keep unzipped copies
        raw = folder / name.removesuffix(".gz")
        raw.write_bytes(gzip.decompress((folder / name).read_bytes()))
        (folder / name).unlink()
    x, y = load_mnist("test", data_dir=folder, download=False)
    np.testing.assert_array_equal(y, arrays[FILES[3]])


def test_missing_file_clear_error(local):
    folder, _ = local
    (folder / FILES[1]).unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("train", data_dir=folder, download=False)
    msg = str(info.value)
    assert msg.splitlines()[:2] == [f"mnist data not found: the folder {folder} is missing 1 file(s):",
                                    f"  {FILES[1]}"]
    assert "download=True" in msg and "NPVAE_DATA_DIR" in msg


def test_missing_file_download_offline(local, monkeypatch):
    folder, _ = local
    (folder / FILES[3]).unlink()
    monkeypatch.setitem(DATASETS["mnist"], "mirrors", (closed_port_url(),))
    with pytest.raises(DataNotFoundError, match=re.escape(FILES[3]) + "(.|\n)*NPVAE_DATA_DIR"):
        load_mnist("test", data_dir=folder)
    assert leftovers(folder) == sorted(FILES[:3])


def test_truncated_file_clear_error(local):
    folder, _ = local
    path = folder / FILES[0]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(ValueError, match=esc(path) + ".*truncated data"):
        load_mnist("train", data_dir=folder, download=False)
    path.write_bytes(path.read_bytes()[:-30])  # truncated gzip stream
    with pytest.raises(ValueError, match=esc(path) + ".*gzip stream is corrupted or truncated"):
        load_mnist("train", data_dir=folder, download=False)


def test_corrupted_gzip_clear_error(local):
    folder, _ = local
    path = folder / FILES[2]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=esc(path) + ".*(gzip|data bytes)"):
        load_mnist("test", data_dir=folder, download=False)


def test_wrong_magic_clear_error(local):
    folder, _ = local
    path = folder / FILES[3]
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match=esc(path) + ".*magic number.*got 3c 68"):
        load_mnist("test", data_dir=folder, download=False)


def test_count_mismatch_names_both_files(local):
    folder, _ = local
    write_idx(folder / FILES[1], np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match=esc(folder / FILES[0]) + " holds 6 images but labels file "
                       + esc(folder / FILES[1]) + " holds 5 labels"):
        load_mnist("train", data_dir=folder, download=False)


@pytest.mark.parametrize("name,array,message", [
    (FILES[0], np.zeros((3, 27, 28), np.uint8), "images file .*shape \\(N, 28, 28\\)"),
    (FILES[0], np.zeros((3, 28, 28), np.float32), "images file .*got float32"),
    (FILES[1], np.zeros((6, 1), np.uint8), "labels file .*shape \\(N,\\)"),
    (FILES[1], np.full(6, 10, np.uint8), "labels file .*values 0..9, got maximum 10"),
])
def test_structural_validation(local, name, array, message):
    folder, _ = local
    write_idx(folder / name, array)
    with pytest.raises(ValueError, match=message + ".*" + re.escape("data_dir")):
        load_mnist("train", data_dir=folder, download=False)


def test_load_argument_errors(local):
    folder, _ = local
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', got 'val'"):
        load_mnist("val", data_dir=folder)
    with pytest.raises(ValueError, match="dataset: .*got 'emnist'"):
        load_mnist(dataset="emnist", data_dir=folder)
    with pytest.raises(TypeError, match="download: expected True or False"):
        load_mnist(data_dir=folder, download="no")


# ---------------------------------------------------------------------------- real MNIST

@pytest.fixture(scope="session")
def mnist_train(mnist_dir):
    return load_mnist("train", data_dir=mnist_dir, download=False)


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    return load_mnist("test", data_dir=mnist_dir, download=False)


def _grey_mean_std(images):
    counts = np.bincount(images.ravel(), minlength=256)
    v = np.arange(256) / 255.0
    mean = (counts * v).sum() / counts.sum()
    return mean, np.sqrt((counts * (v - mean) ** 2).sum() / counts.sum())


def test_real_mnist_train(mnist_train):
    x, y = mnist_train
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    mean, std = _grey_mean_std(x)
    assert mean == pytest.approx(0.130660, abs=1e-5)
    assert std == pytest.approx(0.308108, abs=1e-5)


def test_real_mnist_test(mnist_test):
    x, y = mnist_test
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.shape == (10000,)
    assert np.bincount(y, minlength=10).tolist() == TEST_COUNTS
    assert _grey_mean_std(x)[0] == pytest.approx(0.132515, abs=1e-5)


@pytest.mark.parametrize("name", FILES)
def test_real_mnist_checksums(mnist_dir, name):
    path = mnist_dir / name
    table = DATASETS["mnist"]["files"][name]
    assert verify_checksum(path, "mnist") == table["sha256"] == sha256(path)
    assert hashlib.md5(path.read_bytes()).hexdigest() == table["md5"]


def test_real_mnist_minibatch(mnist_test, rng):
    x, y = mnist_test
    xb, yb = next(minibatches(x, 128, rng=rng, labels=y))
    assert xb.shape == (128, 784) and xb.dtype == np.float32 and yb.shape == (128,)
    assert set(np.unique(xb)) <= {0.0, 1.0}


# ---------------------------------------------------------------- batching, binarization

@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)


def test_binarize_static(images):
    a = binarize_static(images, seed=7)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert set(np.unique(a)) <= {0, 255}
    np.testing.assert_array_equal(a, binarize_static(images, seed=7))
    assert not np.array_equal(a, binarize_static(images, seed=8))
    assert a.mean() / 255 == pytest.approx(images.mean() / 255, abs=0.005)  # ~2e-4 std error
    assert (a[images == 0] == 0).all() and (a[images == 255] == 255).all()
    grey = to_float(a)  # flows through the "none" path as exact 0/1
    assert set(np.unique(grey)) <= {0.0, 1.0}


def test_binarize_static_chunking_independent_of_size(images, monkeypatch):
    monkeypatch.setattr(data, "_STATIC_CHUNK", 7)
    a = binarize_static(images, seed=3)
    monkeypatch.setattr(data, "_STATIC_CHUNK", 1000)
    np.testing.assert_array_equal(a, binarize_static(images, seed=3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_float(images, dtype):
    x = to_float(images[:5], dtype)
    assert x.shape == (5, 784) and x.dtype == dtype
    np.testing.assert_array_equal(x, images[:5].reshape(5, -1) / dtype(255))
    assert to_float(np.array([[0, 255]], np.uint8), dtype).tolist() == [[0.0, 1.0]]


def test_dynamic_binarization_fresh_draws_right_mean(rng):
    grey = np.full((64, 28, 28), 77, dtype=np.uint8)
    draws = [batch_to_float(grey, binarize="dynamic", rng=rng) for _ in range(5)]
    assert all(set(np.unique(d)) == {0.0, 1.0} for d in draws)
    assert not np.array_equal(draws[0], draws[1])
    assert np.mean(draws) == pytest.approx(77 / 255, abs=0.005)  # 5*64*784 draws
    batches = list(minibatches(grey, 32, rng=rng, shuffle=False))
    assert not np.array_equal(batches[0], batches[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dynamic_binarization_is_exact_bernoulli_per_pixel_value(dtype):
    """Every grey level p in 0..255: the mean of many draws is p/255 within a few standard errors."""
    rng = np.random.default_rng(12)
    grey = np.tile(np.arange(256, dtype=np.uint8), (250, 1)).reshape(250, 16, 16)
    reps = 40                                            # 10,000 draws per grey level
    total = np.zeros(256)
    for _ in range(reps):
        x = batch_to_float(grey, binarize="dynamic", rng=rng, dtype=dtype)
        assert x.dtype == dtype and x.shape == (250, 256)
        assert np.isin(x, (0.0, 1.0)).all()
        total += x.sum(axis=0)
    n = 250 * reps
    p = np.arange(256) / 255.0
    mean = total / n
    assert mean[0] == 0.0 and mean[255] == 1.0          # exact at both ends, every draw
    z = (mean[1:255] - p[1:255]) / np.sqrt(p[1:255] * (1 - p[1:255]) / n)
    assert np.abs(z).max() < 5.0                         # 254 levels, each within 5 standard errors
    # Pooled over all levels the test separates p/255 from e.g. p/256 (6 standard errors apart).
    pooled = (total.sum() - n * p.sum()) / np.sqrt(n * (p * (1 - p)).sum())
    assert abs(pooled) < 4.0
    assert abs((total.sum() - n * (np.arange(256) / 256).sum()) / np.sqrt(n * (p * (1 - p)).sum())) > 5.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binarize_fires_with_probability_grey_over_255(dtype):
    """binarize: x = (u < grey / 255), u ~ U[0, 1) from rng.random in ``dtype``: P(x = 1) = grey / 255."""
    n = 16_000                                                  # draws per grey level
    grey = np.tile(np.arange(256, dtype=np.uint8), (n, 1)).reshape(n, 16, 16)
    x = data.binarize(grey, rng=np.random.default_rng(21), dtype=dtype)
    assert x.dtype == dtype and x.shape == (n, 256)
    assert np.isin(x, (0.0, 1.0)).all()
    # exactly the textbook draw, from the same stream
    u = np.random.default_rng(21).random((n, 256), dtype=dtype)
    np.testing.assert_array_equal(x, (u < np.arange(256) / dtype(255)).astype(dtype))
    ones = x.sum(axis=0, dtype=np.float64)                      # (256,) ones per grey level
    assert ones[0] == 0 and ones[255] == n                      # 0 never fires, 255 always does
    p = np.arange(1, 255) / 255.0
    z = (ones[1:255] - n * p) / np.sqrt(n * p * (1 - p))        # binomial(n, p/255), standardized
    assert np.abs(z).max() < 5.0, np.abs(z).max()               # each of 254 levels within 5 standard deviations
    # pooled over the levels the test tells p/255 from p/256 (9.6 standard deviations apart here)
    pooled_sd = np.sqrt(n * (p * (1 - p)).sum())
    assert abs(ones[1:255].sum() - n * p.sum()) / pooled_sd < 4.0
    assert abs(ones[1:255].sum() - n * (np.arange(1, 255) / 256).sum()) / pooled_sd > 5.0


def test_binarize_any_bit_generator_reproducible_and_static_uses_the_same_draw(images):
    ends = np.zeros((3, 28, 28), np.uint8)
    ends[1], ends[2, ::2] = 255, 255                             # all 0, all 255, half and half
    for make in (np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64):
        for dtype in (np.float32, np.float64):
            a = data.binarize(images[:50], rng=np.random.Generator(make(4)), dtype=dtype)
            b = data.binarize(images[:50], rng=np.random.Generator(make(4)), dtype=dtype)
            assert a.dtype == dtype and a.shape == (50, 784)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, batch_to_float(images[:50], rng=np.random.Generator(make(4)),
                                                            dtype=dtype))
            np.testing.assert_array_equal(a[images[:50].reshape(50, -1) == 0], 0)
            np.testing.assert_array_equal(a[images[:50].reshape(50, -1) == 255], 1)
            assert a.mean() == pytest.approx(images[:50].mean() / 255, abs=0.01)  # 39,200 draws: sd 0.0025
            e = data.binarize(ends, rng=np.random.Generator(make(5)), dtype=dtype)
            np.testing.assert_array_equal(e, ends.reshape(3, -1) / 255)
    assert not np.array_equal(data.binarize(images, rng=np.random.default_rng(4)),
                              data.binarize(images, rng=np.random.default_rng(5)))
    # binarize_static: binarize's float32 draws from default_rng(seed), _STATIC_CHUNK images at a time, as 0/255
    many = np.random.default_rng(0).integers(0, 256, (2 * data._STATIC_CHUNK + 37, 3, 5), dtype=np.uint8)
    rng = np.random.default_rng(11)
    chunks = [data.binarize(many[i:i + data._STATIC_CHUNK], rng=rng, dtype=np.float32)
              for i in range(0, len(many), data._STATIC_CHUNK)]
    expected = np.where(np.concatenate(chunks) == 1, 255, 0).astype(np.uint8).reshape(many.shape)
    static = binarize_static(many, seed=11)
    assert static.dtype == np.uint8 and static.shape == many.shape
    np.testing.assert_array_equal(static, expected)
    with pytest.raises(TypeError, match="images: expected dtype uint8"):
        data.binarize(np.zeros((3, 4)), rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        data.binarize(images[:2], rng=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("binarize", ["dynamic", "none"])
def test_minibatches_cover_each_example_once(images, rng, dtype, binarize):
    seen = []
    for x, idx in minibatches(images, 64, rng=rng, binarize=binarize, dtype=dtype,
                              labels=np.arange(len(images))):
        assert x.dtype == dtype and x.shape == (len(idx), 784)
        assert x.min() >= 0 and x.max() <= 1
        if binarize == "none":
            np.testing.assert_array_equal(x, to_float(images[idx], dtype))
        seen.append(idx)
    assert [len(s) for s in seen] == [64, 64, 64, 64, 44]
    order = np.concatenate(seen)
    assert sorted(order.tolist()) == list(range(len(images)))
    assert not np.array_equal(order, np.arange(len(images)))  # shuffled


@settings(max_examples=40)
@given(n=st.integers(1, 50), b=st.integers(1, 20), drop_last=st.booleans(), shuffle=st.booleans())
def test_minibatches_sizes_property(n, b, drop_last, shuffle):
    imgs = np.zeros((n, 2, 2), np.uint8)
    sizes, idx = [], []
    for _, y in minibatches(imgs, b, rng=np.random.default_rng(0), binarize="none",
                            shuffle=shuffle, drop_last=drop_last, labels=np.arange(n)):
        sizes.append(len(y))
        idx.extend(y.tolist())
    assert len(sizes) == n_batches(n, b, drop_last)
    assert all(s == b for s in sizes[:-1]) and (not drop_last or all(s == b for s in sizes))
    assert len(set(idx)) == len(idx) == (n // b * b if drop_last else n)
    if not shuffle:
        assert idx == list(range(len(idx)))


def test_drop_last_and_n_batches(images, rng):
    assert [len(x) for x in minibatches(images[:10], 4, rng=rng, drop_last=True)] == [4, 4]
    assert [len(x) for x in minibatches(images[:10], 4, rng=rng)] == [4, 4, 2]
    assert n_batches(10, 4, False) == 3 and n_batches(10, 4, True) == 2 and n_batches(0, 4) == 0
    assert n_batches(8, 4, False) == n_batches(8, 4, True) == 2


def test_resume_from_stored_permutation_matches_minibatches(images):
    B = 32
    expected = list(minibatches(images, B, rng=np.random.default_rng(5)))
    rng = np.random.default_rng(5)
    perm = rng.permutation(len(images))  # what a checkpoint would store
    for i, start in enumerate(range(0, len(images), B)):
        x = batch_to_float(images[perm[start:start + B]], binarize="dynamic", rng=rng)
        np.testing.assert_array_equal(x, expected[i])


def test_no_global_random_state_used(images, rng):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    binarize_static(images, seed=1)
    list(minibatches(images, 50, rng=rng))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_batching_argument_errors(images, rng):
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        minibatches(images, 0, rng=rng)  # raised at the call, not at the first next()
    with pytest.raises(TypeError, match="batch_size: expected an integer"):
        minibatches(images, 2.5, rng=rng)
    with pytest.raises(ValueError, match="binarize: 'static'.*binarize_static.*binarize='none'"):
        minibatches(images, 8, rng=rng, binarize="static")
    with pytest.raises(ValueError, match="binarize: expected one of 'dynamic', 'none', got 'otsu'"):
        minibatches(images, 8, rng=rng, binarize="otsu")
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        minibatches(images, 8, rng=None)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        batch_to_float(images[:2], binarize="dynamic")
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        minibatches(images, 8, rng=rng, dtype=np.int32)
    with pytest.raises(TypeError, match="images: expected dtype uint8"):
        minibatches(images.astype(np.float32), 8, rng=rng)
    with pytest.raises(TypeError, match="images: expected a numpy.ndarray"):
        to_float([[1, 2]])
    with pytest.raises(ValueError, match="images: expected shape \\(N, ...\\)"):
        to_float(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="labels: expected 300 labels.*got 299"):
        minibatches(images, 8, rng=rng, labels=np.zeros(299))
    with pytest.raises(TypeError, match="shuffle: expected True or False"):
        minibatches(images, 8, rng=rng, shuffle="yes")
    with pytest.raises(TypeError, match="drop_last: expected True or False"):
        n_batches(10, 3, drop_last=None)
    with pytest.raises(ValueError, match="n: expected an integer >= 0"):
        n_batches(-1, 3)
    with pytest.raises(ValueError, match="seed: expected an integer >= 0"):
        binarize_static(images, seed=-1)
    with pytest.raises(TypeError, match="seed: expected an integer"):
        binarize_static(images, seed=None)


# ------------------------------------------------------------------ issue #21: bounded memory
def test_a_header_claiming_more_than_the_gzip_holds_is_refused_unread(tmp_path, monkeypatch):
    """dims (10^9, 28, 28) from a 40-byte gzip: refused from the header, before any allocation."""
    path = tmp_path / "lies.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (10 ** 9, 28, 28), b"")))
    monkeypatch.setattr(np, "frombuffer", lambda *a, **k: pytest.fail("the payload was read"))
    with pytest.raises(ValueError, match=esc(path) + r".*expected at most [\d,]+ data bytes from a gzip file of "
                                          r"\d+ bytes .* got a header declaring dimensions \(1000000000, 28, 28\)"):
        read_idx(path)


def test_a_gzip_bomb_is_read_only_as_far_as_its_header_says(tmp_path):
    """A header for 10 images followed by 64 MB of zeros: the error comes after 1 MB past the data."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (10, 28, 28), b"\0" * (64 << 20)), compresslevel=1))
    with pytest.raises(ValueError, match=r"trailing bytes after the data: dimensions \(10, 28, 28\) of 1-byte items "
                                         r"need 7840 data bytes, got 1056416 or more"):
        read_idx(path)


def test_a_header_beyond_the_maximum_is_refused(tmp_path, monkeypatch):
    from npvae import data as npdata

    path = tmp_path / "big.idx"
    path.write_bytes(idx_bytes(0x08, (100, 28, 28), b"\0" * 78400))
    monkeypatch.setattr(npdata, "MAX_IDX_BYTES", 1000)
    with pytest.raises(ValueError, match=r"expected at most 1,000 data bytes \(npvae.data.MAX_IDX_BYTES"):
        read_idx(path)
