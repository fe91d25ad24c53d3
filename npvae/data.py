"""MNIST-style data: IDX files, checksum-verified download, loading and minibatches.

Images stay ``uint8`` (N, 28, 28) in memory (47 MB for the MNIST training set); only
the minibatch in use is converted to float, so memory stays small.

Sources
-------
* IDX format: Y. LeCun, C. Cortes, C.J.C. Burges, "THE MNIST DATABASE of handwritten
  digits", section "THE IDX FILE FORMAT", http://yann.lecun.com/exdb/mnist/ :
  two zero bytes, a type code byte, a rank byte, then one big-endian 4-byte size per
  dimension, then the data in C (row-major) order, big-endian.
* File names, md5 checksums and mirrors: ``torchvision.datasets.MNIST`` and
  ``FashionMNIST`` (pytorch/vision ``torchvision/datasets/mnist.py``); MNIST sha256 values
  were computed on the byte-identical original files (their md5 equals the published one).
* Fashion-MNIST: H. Xiao, K. Rasul, R. Vollgraf (2017), github.com/zalandoresearch/fashion-mnist.

Folder lookup: the ``data_dir`` argument, else the environment variable ``NPVAE_DATA_DIR``
(the folder holding the four MNIST files; other datasets use a subfolder named after
the dataset), else ``~/.cache/npvae/<dataset>``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._checks import check_bool, check_choice, check_dtype, check_float, check_int, check_rng, memory_budget

__all__ = [
    "DATASETS", "SPLITS", "ENV_VAR", "DataNotFoundError", "ChecksumError", "read_idx", "write_idx",
    "resolve_data_dir", "verify_checksum", "download", "load_mnist", "binarize", "binarize_static", "to_float",
    "batch_to_float", "minibatches", "n_batches",
]

ENV_VAR = "NPVAE_DATA_DIR"

#: Which two files (images, labels) make up each split; identical for every dataset.
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Per dataset: ``mirrors`` (tried in order, each a URL prefix ending in "/") and
#: ``files``: file name -> published checksums (``sha256`` is used when present, else ``md5``).
DATASETS = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "files": {
            "train-images-idx3-ubyte.gz": {
                "sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            },
            "train-labels-idx1-ubyte.gz": {
                "sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "md5": "d53e105ee54ea40749a09fcbcd1e9432",
            },
            "t10k-images-idx3-ubyte.gz": {
                "sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "md5": "9fb629c4189551a2d022fa330f9573f3",
            },
            "t10k-labels-idx1-ubyte.gz": {
                "sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "md5": "ec29112dd5afa0611ce80d1b7f02629c",
            },
        },
    },
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "files": {
            "train-images-idx3-ubyte.gz": {"md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
            "train-labels-idx1-ubyte.gz": {"md5": "25c81989df183df01b3e8a0aad5dffbe"},
            "t10k-images-idx3-ubyte.gz": {"md5": "bef4ecab320f06d8554ea6380940ec79"},
            "t10k-labels-idx1-ubyte.gz": {"md5": "bb300cfdad3c16e7a12a480ee83cd310"},
        },
    },
}


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing and could not be (or were not allowed to be) downloaded.

    Subclass of ``FileNotFoundError`` (hence ``OSError``). The message lists the missing
    files, the folder they belong in, and how to point npvae at another folder.
    """


class ChecksumError(ValueError):
    """A file's checksum differs from the published one (subclass of ``ValueError``)."""


# ----------------------------------------------------------------------------- IDX files

# IDX type code -> dtype of the (big-endian) payload.
_IDX_TYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_TYPES.items()}
_MAX_RANK = 4
_GZIP_MAGIC = b"\x1f\x8b"
#: the largest IDX payload :func:`read_idx` reads, in bytes (the MNIST training images are 47 MB)
MAX_IDX_BYTES = 1 << 31
#: deflate's largest compression ratio is 1032:1 (long runs of one byte; measured 1032.4 with the
#: gzip framing): a gzip file of S bytes decompresses to at most 1040 S bytes, so a header
#: declaring more is refused unread
GZIP_MAX_RATIO = 1040
_REFETCH = ("delete it and download it again (npvae.data.download), "
            "or check that the data folder holds the original files")


def _idx_error(path, problem: str) -> ValueError:
    return ValueError(f"IDX file {path}: {problem}. The file is corrupted, truncated or not "
                      f"an IDX file: {_REFETCH}.")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array.

    Format (LeCun's MNIST page, "THE IDX FILE FORMAT"): bytes 0-1 are zero; byte 2 is the
    type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64);
    byte 3 is the rank; then one big-endian uint32 size per dimension; then exactly
    ``prod(dims) * itemsize`` bytes of big-endian data in row-major order. Compression is
    detected from the gzip magic bytes ``1f 8b``, not from the file name.

    Returns a writeable ``np.ndarray`` of shape ``dims`` (rank 1..4, every size > 0) and
    dtype uint8, int8, int16, int32, float32 or float64 in native byte order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Any malformed content: corrupted or truncated gzip stream, bad magic bytes, unknown
        type code, rank 0 or > 4, a zero dimension, a truncated payload or trailing bytes.
        The message names the file.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"IDX file {path}: not found. Download the dataset with npvae.data.download() "
            f"(or load_mnist(download=True)), or set {ENV_VAR} / data_dir to the folder "
            "that holds the files") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            if compressed:
                with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                    return _read_idx_stream(stream, path, size, compressed=True)
            return _read_idx_stream(f, path, size, compressed=False)
        except (gzip.BadGzipFile, EOFError, zlib.error, struct.error, OSError) as exc:
            if not compressed:
                raise
            raise _idx_error(path, f"the gzip stream is corrupted or truncated "
                                   f"({type(exc).__name__}: {exc})") from exc


def _read_up_to(stream, n: int) -> bytes:
    """At most ``n`` bytes from ``stream`` (fewer only at its end), reading in bounded chunks."""
    parts, got = [], 0
    while got < n:
        chunk = stream.read(min(n - got, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_idx_stream(stream, path, size: int, *, compressed: bool) -> np.ndarray:
    """Parse an IDX file from ``stream`` (decompressed): the header first, then exactly the bytes it declares.

    Memory is bounded by what the file is, not by what its header claims: the declared
    payload is checked against :data:`MAX_IDX_BYTES`, the memory left
    (:func:`npvae._checks.memory_budget`) and the size of the file (for gzip, times
    :data:`GZIP_MAX_RATIO`) before anything is allocated, and then at most 1 MB past it is
    read to detect trailing bytes.
    """
    head = _read_up_to(stream, 4)
    if len(head) < 4:
        raise _idx_error(path, f"expected a header of at least 4 bytes, got {len(head)} bytes")
    if head[:2] != b"\x00\x00":
        raise _idx_error(path, f"expected the magic number to start with bytes 00 00, "
                               f"got {head[:2].hex(' ')}")
    code, rank = head[2], head[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise _idx_error(path, f"expected a type code in ({known}), got 0x{code:02X}")
    if not 1 <= rank <= _MAX_RANK:
        raise _idx_error(path, f"expected a rank between 1 and {_MAX_RANK}, got {rank}")
    start = 4 + 4 * rank
    sizes = _read_up_to(stream, 4 * rank)
    if len(sizes) < 4 * rank:
        raise _idx_error(path, f"truncated header: expected {start} bytes for rank {rank}, "
                               f"got {4 + len(sizes)}")
    dims = struct.unpack(f">{rank}I", sizes)
    if 0 in dims:
        raise _idx_error(path, f"expected every dimension > 0, got dimensions {dims}")
    dtype = _IDX_TYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if not compressed and size - start != expected:  # a plain file holds exactly what it is
        got = size - start
        what = "truncated data" if got < expected else "trailing bytes after the data"
        raise _idx_error(path, f"{what}: dimensions {dims} of {dtype.itemsize}-byte items need "
                               f"{expected} data bytes, got {got}")
    if compressed and expected > size * GZIP_MAX_RATIO:
        raise _idx_error(path, f"expected at most {size * GZIP_MAX_RATIO:,} data bytes from a gzip file of "
                               f"{size:,} bytes (one decompresses to at most {GZIP_MAX_RATIO} times its size), got a header "
                               f"declaring dimensions {dims}: {expected:,} bytes")
    limit = min(MAX_IDX_BYTES, memory_budget())
    if expected > limit:
        raise _idx_error(path, f"expected at most {limit:,} data bytes (npvae.data.MAX_IDX_BYTES, and what fits "
                               f"in memory), got a header declaring dimensions {dims}: {expected:,} bytes")
    buf = bytearray(expected)
    view, got = memoryview(buf), 0
    while got < expected:
        n = stream.readinto(view[got:got + (1 << 22)])
        if not n:
            break
        got += n
    extra = len(_read_up_to(stream, 1 << 20)) if got == expected else 0
    if got != expected or extra:
        what = "truncated data" if got < expected else "trailing bytes after the data"
        more = f"{got + extra}" + (" or more" if extra == 1 << 20 else "")
        raise _idx_error(path, f"{what}: dimensions {dims} of {dtype.itemsize}-byte items need "
                               f"{expected} data bytes, got {more}")
    return np.frombuffer(buf, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path, array, *, compress=None) -> Path:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`); returns the path.

    ``array``: rank 1..4, every size > 0, dtype uint8, int8, int16, int32, float32 or
    float64. ``compress``: gzip the file (default: when ``path`` ends in ``.gz``).

    Raises
    ------
    TypeError
        ``array`` is not an ndarray or has an unsupported dtype.
    ValueError
        Rank outside 1..4 or a zero dimension.
    """
    path = Path(path)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array: expected a numpy.ndarray, got {type(array).__name__}")
    code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(f"array: expected dtype uint8, int8, int16, int32, float32 or float64, "
                        f"got {array.dtype}")
    if not 1 <= array.ndim <= _MAX_RANK or 0 in array.shape:
        raise ValueError(f"array: expected rank 1..{_MAX_RANK} with every size > 0, "
                         f"got shape {array.shape}")
    data = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes())
    if path.suffix == ".gz" if compress is None else compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------- folders and checksums

def _check_dataset(dataset) -> str:
    return check_choice(dataset, "dataset", tuple(DATASETS))


def resolve_data_dir(data_dir=None, dataset: str = "mnist") -> Path:
    """Return the folder for ``dataset``: ``data_dir``, else ``$NPVAE_DATA_DIR``, else the cache.

    With ``NPVAE_DATA_DIR`` set, MNIST lives directly in that folder and any other dataset
    in ``$NPVAE_DATA_DIR/<dataset>`` (the files of different datasets share names). Without
    it the folder is ``~/.cache/npvae/<dataset>``. The folder need not exist yet.

    Raises
    ------
    TypeError
        ``data_dir`` is not None, a str or an os.PathLike.
    ValueError
        ``dataset`` is not a key of :data:`DATASETS`.
    """
    dataset = _check_dataset(dataset)
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir: expected a folder path (str or os.PathLike), "
                            f"got {type(data_dir).__name__}")
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        return base if dataset == "mnist" else base / dataset
    return Path.home() / ".cache" / "npvae" / dataset


def _expected_checksum(dataset: str, filename: str) -> tuple[str, str]:
    files = DATASETS[dataset]["files"]
    if filename not in files:
        raise ValueError(f"filename: expected one of {', '.join(map(repr, files))} for dataset "
                         f"{dataset!r}, got {filename!r}")
    sums = files[filename]
    algo = "sha256" if "sha256" in sums else "md5"
    return algo, sums[algo].lower()


def _file_digest(path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path, dataset: str = "mnist", filename: str | None = None) -> str:
    """Check a file against the published checksum of ``filename`` (default: its name).

    Uses sha256 when :data:`DATASETS` has one for the file, else md5. Returns the hex digest.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unknown ``dataset`` or ``filename``.
    ChecksumError (a ValueError)
        The digest differs; the message names the file, the expected and the received digest.
    """
    path = Path(path)
    dataset = _check_dataset(dataset)
    filename = path.name if filename is None else filename
    got, mismatch = _compare_checksum(path, dataset, filename)
    if mismatch:
        raise ChecksumError(f"{path}: {mismatch} (published for {dataset} {filename}). The file is "
                            f"corrupted or is not the original: {_REFETCH}.")
    return got


def _compare_checksum(path, dataset: str, filename: str) -> tuple[str, str | None]:
    """The file's digest, and "expected <algo> <digest>, got <digest>" if it is not the published one."""
    algo, expected = _expected_checksum(dataset, filename)
    got = _file_digest(path, algo)
    return got, (None if got == expected else f"expected {algo} {expected}, got {got}")


# ------------------------------------------------------------------------------- download

def _find(folder: Path, name: str) -> Path | None:
    """The file ``name`` in ``folder``, or its uncompressed twin without ``.gz``, or None."""
    for candidate in (name, name.removesuffix(".gz")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _missing_message(dataset, folder, names, failures=(), offer_download=False) -> str:
    lines = [f"{dataset} data not found: the folder {folder} is missing "
             f"{len(names)} file(s):", *(f"  {n}" for n in names)]
    if failures:
        lines += ["Downloading failed (no network, or every mirror is down):",
                  *(f"  {f}" for f in failures)]
    mirrors = ", ".join(DATASETS[dataset]["mirrors"])
    lines.append(f"To fix: copy these files (from {mirrors}) into {folder}, or point npvae at a "
                 f"folder that holds them: set {ENV_VAR}=/path/to/folder or pass --data-dir "
                 "/path/to/folder (data_dir= in Python).")
    if offer_download:
        lines.append("Or let npvae download them: load_mnist(..., download=True) or "
                     f"npvae.data.download({dataset!r}).")
    return "\n".join(lines)


def _fetch_one(url: str, folder: Path, name: str, dataset: str, progress: bool, timeout: float):
    """Download ``url`` to a temp file in ``folder``, verify it, then rename it to ``name``."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length", "")
            total, done, shown = int(length) if length.isdigit() else 0, 0, -1
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                pct = done * 100 // total if total else done >> 20
                if progress and pct != shown:
                    shown = pct
                    amount = f"{pct:3d}%" if total else f"{pct} MB"
                    sys.stderr.write(f"\rDownloading {url}: {amount}")
                    sys.stderr.flush()
            if progress:
                sys.stderr.write("\n")
            if total and done != total:
                raise OSError(f"incomplete download: got {done} of {total} bytes")
        _, mismatch = _compare_checksum(tmp, dataset, name)
        if mismatch:
            raise ChecksumError(f"{name} downloaded from {url}: {mismatch}. The download was corrupted "
                                f"and has been deleted; try again later or another mirror (mirrors=[...]).")
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fetch_files(dataset, folder: Path, names, *, mirrors=None, progress=True, timeout=30):
    """Download each of ``names`` (trying every mirror in turn) into ``folder``."""
    mirrors = DATASETS[dataset]["mirrors"] if mirrors is None else mirrors
    if not isinstance(mirrors, (list, tuple)) or not mirrors or not all(isinstance(m, str) for m in mirrors):
        raise TypeError(f"mirrors: expected a non-empty list of URL prefixes (str), got {mirrors!r}")
    mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
    progress = check_bool(progress, "progress")
    timeout = check_float(timeout, "timeout", minimum=0, strict_min=True)
    if not names:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        failures, bad_checksum = [], None
        for mirror in mirrors:
            try:
                _fetch_one(mirror + name, folder, name, dataset, progress, timeout)
                break
            except ChecksumError as exc:
                bad_checksum = exc
                failures.append(f"{mirror}{name}: checksum mismatch")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{mirror}{name}: {type(exc).__name__}: {exc}")
        else:
            if bad_checksum is not None:
                raise bad_checksum
            raise DataNotFoundError(_missing_message(dataset, folder, names[i:], failures))


def download(dataset: str = "mnist", data_dir=None, *, mirrors=None, progress: bool = True,
             timeout: float = 30) -> Path:
    """Download the missing files of ``dataset`` into its folder; returns the folder.

    Files already present (by name, or unzipped without ``.gz``) are not downloaded again.
    Each file is fetched from the mirrors in turn with urllib into a temporary file in the
    same folder, checked against the published checksum (sha256 if known, else md5) and only
    then renamed atomically (``os.replace``), so a partial or corrupted download never leaves
    a file under the final name.

    ``dataset``: "mnist" or "fashion-mnist"; ``data_dir``: see :func:`resolve_data_dir`;
    ``mirrors``: URL prefixes tried in order (default ``DATASETS[dataset]["mirrors"]``);
    ``progress``: print a percentage line per file on stderr; ``timeout``: seconds.

    Raises
    ------
    DataNotFoundError (a FileNotFoundError)
        Every mirror failed for a file (e.g. offline); lists the files still needed and the folder.
    ChecksumError (a ValueError)
        A downloaded file (from every mirror that answered) had the wrong checksum.
    TypeError, ValueError
        Bad arguments.
    """
    dataset = _check_dataset(dataset)
    folder = resolve_data_dir(data_dir, dataset)
    missing = [n for n in DATASETS[dataset]["files"] if _find(folder, n) is None]
    _fetch_files(dataset, folder, missing, mirrors=mirrors, progress=progress, timeout=timeout)
    return folder


# ---------------------------------------------------------------------------------- loading

def load_mnist(split: str = "train", *, dataset: str = "mnist", data_dir=None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST as uint8 arrays.

    Parameters
    ----------
    split : {"train", "test"}
    dataset : {"mnist", "fashion-mnist"}
    data_dir : str or os.PathLike, optional
        See :func:`resolve_data_dir`. Files may be gzipped (original names) or unzipped
        (the same names without ``.gz``).
    download : bool
        Download missing files (checksum-verified). Local files are only validated
        structurally, not checksummed, so your own copies in IDX format work too.

    Returns
    -------
    images : np.ndarray, uint8, shape (N, 28, 28)
        Grey levels 0..255 (N = 60000 train / 10000 test).
    labels : np.ndarray, uint8, shape (N,)
        Class indices 0..9.

    Raises
    ------
    DataNotFoundError (a FileNotFoundError)
        Files missing and ``download=False``, or every download mirror failed.
    ValueError
        Bad ``split``/``dataset``; a malformed file (see :func:`read_idx`); images not uint8
        (N, 28, 28); labels not uint8 (N,) with values 0..9; image and label counts differ.
    """
    split = check_choice(split, "split", tuple(SPLITS))
    dataset = _check_dataset(dataset)
    download = check_bool(download, "download")
    folder = resolve_data_dir(data_dir, dataset)
    missing = [n for n in SPLITS[split] if _find(folder, n) is None]
    if missing:
        if not download:
            raise DataNotFoundError(_missing_message(dataset, folder, missing, offer_download=True))
        _fetch_files(dataset, folder, missing)
    img_path, lbl_path = (_find(folder, n) for n in SPLITS[split])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    fix = "point data_dir at a folder with the original files, or delete the file and download again"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images file {img_path}: expected uint8 images of shape (N, 28, 28), got "
                         f"{images.dtype} of shape {images.shape}; {fix}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"labels file {lbl_path}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} of shape {labels.shape}; {fix}")
    if labels.max() > 9:
        raise ValueError(f"labels file {lbl_path}: expected label values 0..9, got maximum "
                         f"{labels.max()}; {fix}")
    if len(images) != len(labels):
        raise ValueError(f"images file {img_path} holds {len(images)} images but labels file "
                         f"{lbl_path} holds {len(labels)} labels; expected equal counts (the "
                         f"files come from different splits or one is damaged); {fix}")
    return images, labels


# ---------------------------------------------------------------- batching, binarization

_STATIC_CHUNK = 1024  # images per chunk in binarize_static (bounds the float scratch memory)


def _check_images(images, name: str = "images") -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of uint8 grey levels (as returned by "
                        f"load_mnist), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8 (grey levels 0..255, as returned by "
                        f"load_mnist), got dtype {images.dtype}")
    if images.ndim < 2:
        raise ValueError(f"{name}: expected shape (N, ...) such as (N, 28, 28), got shape "
                         f"{images.shape}")
    return images


def _check_binarize(binarize) -> str:
    if isinstance(binarize, str) and binarize == "static":
        raise ValueError("binarize: 'static' is not a per-batch option; binarize the whole set once "
                         "with images = binarize_static(images, seed=...) and pass binarize='none' "
                         "(its 0/255 values become exactly 0.0/1.0)")
    return check_choice(binarize, "binarize", ("dynamic", "none"))


def binarize_static(images: np.ndarray, *, seed: int) -> np.ndarray:
    """One fixed Bernoulli draw per pixel: 255 with probability ``pixel / 255``, else 0.

    The draw is :func:`binarize`'s, from ``np.random.default_rng(seed)`` in chunks of
    images (so the float scratch memory stays small): the same seed always gives the same array. Feed the
    result to :func:`minibatches` with ``binarize="none"``.

    ``images``: uint8, shape (N, ...); ``seed``: int >= 0. Returns a uint8 array of the
    same shape with values in {0, 255}.

    Raises
    ------
    TypeError
        ``images`` not a uint8 ndarray, ``seed`` not an int.
    ValueError
        ``images`` of rank < 2, negative ``seed``.
    """
    images = _check_images(images)
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    out = np.empty_like(images)
    for start in range(0, len(images), _STATIC_CHUNK):
        draw = _to_float(images[start:start + _STATIC_CHUNK], "dynamic", rng, np.dtype(np.float32))  # 0/1, (n, pixels)
        out[start:start + _STATIC_CHUNK] = np.where(draw == 1, np.uint8(255), np.uint8(0)).reshape(draw.shape[0], *images.shape[1:])
    return out


def to_float(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Grey levels ``images / 255`` in [0, 1], flattened to (B, 784) for (B, 28, 28) input.

    Returns an array of shape ``(B, prod(images.shape[1:]))`` and dtype ``dtype``.
    Raises TypeError for a non-uint8 ``images`` or a dtype other than float32/float64,
    ValueError for ``images`` of rank < 2.
    """
    return _to_float(_check_images(images), "none", None, check_dtype(dtype))


def binarize(images: np.ndarray, *, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """One Bernoulli draw per pixel: 1 with probability ``pixel / 255``, else 0 (dynamic binarization).

    ``x = (u < grey / 255)`` with ``u`` uniform on [0, 1) from ``rng`` (``rng.random``, in
    ``dtype``): P(u < p) = p. Pixels 0 never fire and 255 always do. The binarization of
    the IWAE paper (Burda et al. 2016, section 5.2: a fresh draw each time an image is
    used); :func:`binarize_static` makes one fixed draw the same way.

    ``images``: uint8, shape (B, ...); ``rng``: ``np.random.Generator``; ``dtype``: float32
    or float64. Returns shape (B, prod(images.shape[1:])) of ``dtype`` with values {0, 1}.
    Raises TypeError for a non-uint8 ``images``, a bad ``rng`` or ``dtype``; ValueError for
    ``images`` of rank < 2.
    """
    images, rng, dtype = _check_images(images), check_rng(rng), check_dtype(dtype)
    return _to_float(images, "dynamic", rng, dtype)


def _to_float(images: np.ndarray, binarize: str, rng, dtype: np.dtype) -> np.ndarray:
    """A checked uint8 batch (B, ...) -> (B, prod(shape[1:])) ``dtype``: binarized ("dynamic") or /255 ("none")."""
    grey = images.reshape(len(images), -1)
    if binarize == "dynamic":
        # x = 1[u < p], u ~ U[0, 1), p = grey / 255: P(x = 1) = p (the one binarizer, dynamic and static)
        return (rng.random(grey.shape, dtype=dtype) < grey / dtype.type(255)).astype(dtype)
    x = grey.astype(dtype)
    x /= dtype.type(255)
    return x


def batch_to_float(images: np.ndarray, *, binarize: str = "dynamic", rng=None,
                   dtype=np.float32) -> np.ndarray:
    """Convert one uint8 batch to the float input of a model, as :func:`minibatches` does.

    A training loop that resumes mid-epoch from a stored permutation ``perm`` gets exactly
    the batches :func:`minibatches` would give with
    ``batch_to_float(images[perm[i:i + B]], binarize=..., rng=rng, dtype=...)``.

    ``images``: uint8, shape (B, ...). ``binarize``: "dynamic" draws a fresh Bernoulli
    (pixel / 255) sample with values {0, 1} (:func:`binarize`; needs ``rng``, a
    ``np.random.Generator``); "none" gives the grey levels in [0, 1]. Returns shape
    ``(B, prod(images.shape[1:]))`` (e.g. (B, 784)) and dtype ``dtype`` (float32 or float64).

    Raises
    ------
    ValueError
        Unknown ``binarize`` (including "static", see :func:`binarize_static`).
    TypeError
        Bad ``images``, ``dtype``, or a missing ``rng`` for "dynamic".
    """
    binarize = _check_binarize(binarize)
    images, dtype = _check_images(images), check_dtype(dtype)
    if binarize == "dynamic":
        check_rng(rng)
    return _to_float(images, binarize, rng, dtype)


def n_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of minibatches of ``batch_size`` from ``n`` examples (floor if ``drop_last``, else ceil).

    Raises TypeError/ValueError for a non-integer or negative ``n``, a ``batch_size`` < 1
    or a non-bool ``drop_last``.
    """
    n = check_int(n, "n", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return n // batch_size if check_bool(drop_last, "drop_last") else -(-n // batch_size)


def minibatches(images: np.ndarray, batch_size: int, *, rng, binarize: str = "dynamic",
                dtype=np.float32, shuffle: bool = True, drop_last: bool = False, labels=None):
    """Iterate once over ``images`` (one epoch) in float minibatches.

    Arguments are validated when this is called (not at the first ``next``). The permutation
    is drawn then with ``rng.permutation(N)``; each batch is then converted by
    :func:`batch_to_float` (drawing its Bernoulli sample from ``rng`` for "dynamic").

    Parameters
    ----------
    images : np.ndarray, uint8, shape (N, 28, 28) (any (N, ...) works)
    batch_size : int >= 1
    rng : np.random.Generator
    binarize : {"dynamic", "none"}
        "static" is rejected: call :func:`binarize_static` once and pass "none".
    dtype : float32 or float64
    shuffle : bool
        Visit the examples in random order; otherwise in stored order.
    drop_last : bool
        Skip the final batch when it is smaller than ``batch_size``.
    labels : np.ndarray, shape (N, ...), optional
        If given, yield ``(x, labels[batch_indices])`` tuples.

    Yields
    ------
    x : np.ndarray, shape (B, 784), dtype ``dtype``, values in [0, 1]
        (or ``(x, y)``); B = ``batch_size`` except possibly for the last batch.

    Raises
    ------
    TypeError
        Bad ``images``, ``rng``, ``dtype``, ``labels`` type, non-int ``batch_size``, non-bool flags.
    ValueError
        ``batch_size`` < 1, unknown ``binarize``, ``labels`` length differing from N.
    """
    images = _check_images(images)
    batch_size, drop_last = check_int(batch_size, "batch_size", minimum=1), check_bool(drop_last, "drop_last")
    binarize, rng, dtype = _check_binarize(binarize), check_rng(rng), check_dtype(dtype)
    shuffle = check_bool(shuffle, "shuffle")
    count = len(images) // batch_size if drop_last else -(-len(images) // batch_size)
    if labels is not None:
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"labels: expected a numpy.ndarray or None, got {type(labels).__name__}")
        if len(labels) != len(images):
            raise ValueError(f"labels: expected {len(images)} labels (one per image), "
                             f"got {len(labels)}")
    order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
    return _batches(images, labels, order, int(batch_size), count, binarize, rng, dtype)


def _batches(images, labels, order, batch_size, count, binarize, rng, dtype):
    for i in range(count):
        idx = order[i * batch_size:(i + 1) * batch_size]
        x = _to_float(images[idx], binarize, rng, dtype)  # the arguments were checked by minibatches
        yield x if labels is None else (x, labels[idx])
