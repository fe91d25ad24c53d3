"""Checkpoints: atomic ``.npz`` files that load without pickle.

Layout of a checkpoint file (a plain NumPy ``.npz`` archive):

* ``"__meta__"``: a 0-d unicode array holding JSON: ``format_version``, ``kind``
  (``"npvae-checkpoint"``) and whatever the writer adds (model config, training config,
  epoch and step counters, the Generator's state, the history);
* ``"param/<name>"``: every model parameter (``VAE.params``);
* ``"optim/<key>"``: the optimizer's ``state_dict()`` (step count, moments, ...);
* ``"array/<key>"``: any other arrays (e.g. the current epoch's permutation).

No entry is an object array, so ``np.load(path, allow_pickle=False)`` reads it, and a
file from an untrusted source cannot run code. Files are written to a temporary file in
the same folder, flushed to disk, and renamed over the target with ``os.replace``: a
crash mid-write leaves the previous checkpoint intact. The temporary file is made by
``tempfile.mkstemp`` (an unpredictable name, created with ``O_EXCL``, so a symlink planted
in a shared folder is never followed); :func:`remove_stale_temporaries` deletes those a
killed process left behind.

A checkpoint is read as untrusted data: the zip members are listed and each ``.npy``
header is read (shape, dtype) before any array is; duplicate or unknown members, object
dtypes, sizes the file does not hold or memory cannot hold (:func:`npvae._checks.memory_budget`)
refuse the file before anything large is allocated; parameters and optimizer state must
be finite.

``FORMAT_VERSION`` is stored so that later versions can convert old files; a file with a
newer version than this code knows is refused with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ._checks import memory_budget

__all__ = ["FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint", "restore_params",
           "atomic_write", "remove_stale_temporaries", "KNOWN_ARRAYS", "MAX_META_BYTES", "lock_folder",
           "FolderInUse", "LOCK_NAME"]

FORMAT_VERSION = 2  # 2: model_config carries the model's kind; epoch sums by metric name
KIND = "npvae-checkpoint"
#: the ``array/<key>`` entries a checkpoint may hold (the Trainer's epoch permutation); any other refuses the file
KNOWN_ARRAYS = ("perm",)
#: the largest ``__meta__`` read (the history of the IWAE paper's 3,280 epochs is about 1 MB of JSON)
MAX_META_BYTES = 64 << 20
#: optimizer entries that are not per-parameter state (step, lr, betas, ...) hold at most this many values
_MAX_HYPER_SIZE = 16
#: a temporary file of :func:`atomic_write` (and of older versions: ``.<name>.tmp-<pid>``), with its writer's pid
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(-.*)?$|^\.npvae-write-test-(\d+)(\..*)?$")


@dataclass
class Checkpoint:
    """The contents of a checkpoint file: ``meta`` (dict from JSON) and three array dicts."""

    meta: dict
    params: dict[str, np.ndarray] = field(default_factory=dict)
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def atomic_write(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is made by ``tempfile.mkstemp`` in ``path``'s folder: an
    unpredictable name ``.<name>.tmp-<pid>-<random>``, created with ``O_EXCL`` (a symlink
    planted under any name is never opened or followed). It is flushed and fsync'ed before
    ``os.replace``, which is atomic on POSIX and Windows and replaces a symlink at ``path``
    itself rather than its target: readers see the old file or the complete new one, never
    a part. On any exception the temporary file is removed and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 minus the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's live process (or a pid no process can have)
    return True


#: the lock file :func:`lock_folder` creates in a results folder
LOCK_NAME = ".npvae.lock"


class FolderInUse(OSError):
    """Another live process holds the folder's lock; ``holder`` is its pid as written in the lock file."""

    def __init__(self, folder, holder: str):
        self.holder = holder
        super().__init__(f"{folder}: expected a folder no other run is using, got one locked by pid {holder}")


def lock_folder(folder) -> int:
    """Take the exclusive lock of ``folder`` for as long as the returned descriptor is open (close it to release).

    ``fcntl.flock`` on ``folder/.npvae.lock``, opened with ``O_NOFOLLOW`` (a planted symlink
    is refused, ELOOP) and without truncating; once locked, the file holds this process's
    pid. The kernel releases the lock when the process ends, however it ends, so a killed
    run never leaves the folder locked. Raises :class:`FolderInUse` naming the holder's
    pid if another process holds it, OSError if the file cannot be opened.
    """
    import fcntl  # POSIX only, like the rest of the atomic writes

    fd = os.open(Path(folder) / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(folder, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; return their paths.

    A temporary of :func:`atomic_write` (``.<name>.tmp-<pid>-...``, or ``.<name>.tmp-<pid>``
    of older versions) or a write probe (``.npvae-write-test-<pid>...``) whose pid is no
    longer running. Symlinks under such names are removed as links (never followed);
    folders are left alone.
    """
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _TEMPORARY.match(entry.name)
            if m is None or entry.is_dir(follow_symlinks=False):
                continue
            pid = int(m.group(1) or m.group(3))
            if pid != os.getpid() and not _alive(pid):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(Path(entry.path))
    return removed


def save_checkpoint(path, *, params: Mapping[str, np.ndarray], meta: dict,
                    optimizer_state: Mapping[str, np.ndarray] | None = None,
                    arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a checkpoint atomically; returns its path.

    ``meta`` must be JSON-serialisable (``format_version`` and ``kind`` are added).
    ``params``, ``optimizer_state`` and ``arrays`` map names to NumPy arrays of
    non-object dtype. Raises TypeError if ``meta`` is not JSON-serialisable or an array
    has an object dtype (it could not be loaded without pickle).
    """
    meta = {**meta, "format_version": FORMAT_VERSION, "kind": KIND}
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta: expected a JSON-serialisable dict, got one that is not ({exc})") from exc
    payload = {"__meta__": np.array(text)}
    for prefix, group in (("param", params), ("optim", optimizer_state or {}), ("array", arrays or {})):
        for k, v in group.items():
            v = np.asarray(v)
            if v.dtype.kind == "O":
                raise TypeError(f"{prefix}/{k}: expected a non-object array (loadable without pickle), got dtype object")
            payload[f"{prefix}/{k}"] = v
    return atomic_write(path, lambda f: np.savez(f, **payload))


def _corrupted(path, exc) -> ValueError:
    return ValueError(f"checkpoint {path}: the file is corrupted or not an npvae checkpoint ({exc}); "
                      f"delete it and resume from another checkpoint, or start again")


def _read_header(f) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from the ``.npy`` header at the start of the open member ``f`` (nothing else read)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"expected .npy format version 1.0 or 2.0, got {version}")
    return shape, dtype


def _check_member(path, key: str, shape: tuple, dtype: np.dtype, held: int, params: dict) -> int:
    """The bytes the member ``key`` declares, after checking its dtype and size against what it may be."""
    where = f"checkpoint {path}: entry {key!r}"
    if dtype.hasobject:
        raise ValueError(f"{where}: expected a non-object array (loadable without pickle), got dtype {dtype}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > held:
        raise ValueError(f"{where}: expected its data in the file, got a header declaring shape {shape} "
                         f"({nbytes:,} bytes) in a member of {held:,} bytes; the file was altered: start again")
    prefix, _, name = key.partition("/")
    if key == "__meta__":
        ok = shape == () and dtype.kind == "U" and nbytes <= MAX_META_BYTES
        want = f"a 0-d text array of at most {MAX_META_BYTES:,} bytes"
    elif prefix == "param":
        ok, want = dtype in (np.float32, np.float64), "a float32 or float64 array"
    elif key == "array/perm":
        ok, want = len(shape) == 1 and dtype.kind in "iu", "a 1-d integer array (the epoch's order)"
    elif prefix == "array":  # another array the caller named in ``arrays``
        ok, want = True, ""
    else:  # optim/<kind>.<param> is a parameter's state (its shape and dtype); anything else a few numbers
        owner = name.partition(".")[2]  # "m.encoder.0.W" -> "encoder.0.W"
        if owner in params:
            ok = (shape, dtype) == params[owner]
            want = f"the shape {params[owner][0]} and dtype {params[owner][1]} of parameter {owner!r}"
        else:
            ok = math.prod(shape) <= _MAX_HYPER_SIZE and dtype.kind in "fiubU"
            want = f"at most {_MAX_HYPER_SIZE} numbers or a name (an optimizer setting)"
    if not ok:
        raise ValueError(f"{where}: expected {want}, got dtype {dtype}, shape {shape}; "
                         f"the file is not an npvae checkpoint or was altered")
    return nbytes


def load_checkpoint(path, *, arrays=KNOWN_ARRAYS,
                    expect: Callable[[dict, dict], None] | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, as untrusted data, without pickle.

    Before any array is read: the members are listed (each name at most once, each
    ``__meta__``, ``param/<name>``, ``optim/<key>`` or ``array/<key>`` with ``<key>`` in
    ``arrays``), every ``.npy`` header is read and checked (no object dtype; parameters
    float32/float64; an optimizer entry the shape and dtype of its parameter, or a few
    numbers; the declared size held by the file and, all members together, within
    :func:`npvae._checks.memory_budget`), ``__meta__`` is parsed (at most
    :data:`MAX_META_BYTES`) and ``expect(meta, headers)`` is called, if given, with
    ``headers`` mapping each member to ``(shape, dtype)``: it may raise to refuse the file
    (e.g. parameters of another architecture). Then the arrays are read, and every
    parameter and optimizer state must be finite.

    Raises FileNotFoundError (naming the file) if it does not exist, and ValueError if it
    is corrupted, not an npvae checkpoint, from a newer format version, or fails a check.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file (train first, or check --out / the path)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # every .npz is a zip archive
        raise ValueError(f"checkpoint {path}: expected an .npz (zip) archive, got a file starting with {head!r}; "
                         f"the file is corrupted or not an npvae checkpoint: delete it and start again")
    errors = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, struct.error,
              NotImplementedError, RuntimeError)
    try:
        zf = zipfile.ZipFile(path)
    except errors + (ValueError,) as exc:
        raise _corrupted(path, exc) from exc
    with zf:
        infos = zf.infolist()
        seen: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in seen:
                raise ValueError(f"checkpoint {path}: expected each entry once, got {info.filename!r} twice "
                                 f"(the second would shadow the first); the file was altered: start again")
            seen[info.filename] = info
        if "__meta__.npy" not in seen:
            raise ValueError(f"checkpoint {path}: expected an npvae checkpoint, got an .npz without '__meta__' "
                             f"(is it a checkpoint at all?)")
        groups = ("param", "optim", "array")
        keys = {}
        for name in seen:
            key = name[:-len(".npy")] if name.endswith(".npy") else None
            prefix, _, rest = (key or "").partition("/")
            if key != "__meta__" and (prefix not in groups or not rest or (prefix == "array" and rest not in arrays)):
                known = "__meta__, param/..., optim/..." + "".join(f", array/{a}" for a in arrays)
                raise ValueError(f"checkpoint {path}: expected entries named {known}, got {name!r}; "
                                 f"the file is not an npvae checkpoint or was altered")
            keys[key] = seen[name]
        headers = {}
        try:
            for key, info in keys.items():
                with zf.open(info) as f:
                    shape, dtype = _read_header(f)
                    headers[key] = (shape, dtype, info.file_size - f.tell())
        except errors + (ValueError,) as exc:
            raise _corrupted(path, exc) from exc
        params = {k[len("param/"):]: (h[0], h[1]) for k, h in headers.items() if k.startswith("param/")}
        total = sum(_check_member(path, key, shape, dtype, held, params) for key, (shape, dtype, held) in headers.items())
        budget = memory_budget()
        if total > budget:
            raise ValueError(f"checkpoint {path}: expected arrays that fit in {budget / 2 ** 30:.3g} GiB of memory, "
                             f"got headers declaring {total / 2 ** 30:.3g} GiB; the file was altered or is not "
                             f"an npvae checkpoint")
        try:
            with zf.open(keys["__meta__"]) as f:
                text = str(np.lib.format.read_array(f, allow_pickle=False))
            meta = json.loads(text)
        except RecursionError:
            raise ValueError(f"checkpoint {path}: expected JSON metadata, got JSON nested too deeply to read; "
                             f"the file was altered: start again") from None
        except errors + (ValueError,) as exc:
            raise _corrupted(path, exc) from exc
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            raise ValueError(f"checkpoint {path}: expected kind {KIND!r}, "
                             f"got {meta.get('kind') if isinstance(meta, dict) else type(meta).__name__!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
            raise ValueError(f"checkpoint {path}: expected format_version 1..{FORMAT_VERSION}, got {version!r} "
                             f"(written by a newer npvae? upgrade npvae to read it)")
        if expect is not None:
            expect(meta, {k: (shape, dtype) for k, (shape, dtype, _) in headers.items() if k != "__meta__"})
        ckpt = Checkpoint(meta)
        target = {"param": ckpt.params, "optim": ckpt.optimizer_state, "array": ckpt.arrays}
        try:
            for key, info in keys.items():
                if key == "__meta__":
                    continue
                prefix, _, name = key.partition("/")
                with zf.open(info) as f:
                    target[prefix][name] = np.lib.format.read_array(f, allow_pickle=False)
        except errors + (ValueError,) as exc:
            raise _corrupted(path, exc) from exc
    for what, group in (("parameter", ckpt.params), ("optimizer state", ckpt.optimizer_state)):
        for name, a in group.items():
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad = int(a.size - np.count_nonzero(np.isfinite(a)))
                raise ValueError(f"checkpoint {path}: {what} {name!r}: expected finite values, got {bad} NaN or "
                                 f"inf; this checkpoint cannot be trained or evaluated: resume from another, "
                                 f"or start again")
    return ckpt


def restore_params(params: Mapping[str, np.ndarray], saved: Mapping[str, np.ndarray], *, source="checkpoint") -> None:
    """Copy ``saved`` into the live arrays ``params`` in place, after checking they match.

    Raises ValueError naming the first parameter that is missing, unexpected, or of
    another shape (a checkpoint of a different architecture), and TypeError for another
    dtype. Nothing is copied unless everything matches.
    """
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(params))
    if missing or extra:
        raise ValueError(f"{source}: expected the parameters of this model, got a different architecture "
                         f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, p in params.items():
        s = saved[k]
        if s.shape != p.shape:
            raise ValueError(f"{source}: parameter {k!r}: expected shape {p.shape}, got {s.shape} "
                             f"(the checkpoint was written for a different architecture)")
        if s.dtype != p.dtype:
            raise TypeError(f"{source}: parameter {k!r}: expected dtype {p.dtype}, got {s.dtype}")
    for k, p in params.items():
        np.copyto(p, saved[k])
