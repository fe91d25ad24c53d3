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
crash mid-write leaves the previous checkpoint intact.

``FORMAT_VERSION`` is stored so that later versions can convert old files; a file with a
newer version than this code knows is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint", "restore_params",
           "atomic_write"]

FORMAT_VERSION = 2  # 2: model_config carries the model's kind; epoch sums by metric name
KIND = "npvae-checkpoint"


@dataclass
class Checkpoint:
    """The contents of a checkpoint file: ``meta`` (dict from JSON) and three array dicts."""

    meta: dict
    params: dict[str, np.ndarray] = field(default_factory=dict)
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def atomic_write(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is flushed and fsync'ed before ``os.replace``, which is atomic on
    POSIX and Windows: readers see the old file or the complete new one, never a part.
    On any exception the temporary file is removed and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``allow_pickle=False``.

    Raises FileNotFoundError (naming the file) if it does not exist, and ValueError if it
    is corrupted, not an npvae checkpoint, or from a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file (train first, or check --out / the path)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # every .npz is a zip archive
        raise ValueError(f"checkpoint {path}: expected an .npz (zip) archive, got a file starting with {head!r}; "
                         f"the file is corrupted or not an npvae checkpoint: delete it and start again")
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {k: npz[k] for k in npz.files}  # read every entry once, inside the guard
        meta = json.loads(str(entries.pop("__meta__")))
    except KeyError:
        raise ValueError(f"checkpoint {path}: expected an npvae checkpoint, got an .npz without '__meta__' "
                         f"(is it a checkpoint at all?)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"checkpoint {path}: the file is corrupted or not an npvae checkpoint ({exc}); "
                         f"delete it and resume from another checkpoint, or start again") from exc
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ValueError(f"checkpoint {path}: expected kind {KIND!r}, got {meta.get('kind') if isinstance(meta, dict) else meta!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ValueError(f"checkpoint {path}: expected format_version 1..{FORMAT_VERSION}, got {version!r} "
                         f"(written by a newer npvae? upgrade npvae to read it)")
    ckpt = Checkpoint(meta)
    groups = {"param": ckpt.params, "optim": ckpt.optimizer_state, "array": ckpt.arrays}
    for key, value in entries.items():
        prefix, _, name = key.partition("/")
        if prefix not in groups or not name:
            raise ValueError(f"checkpoint {path}: expected entries named param/..., optim/... or array/..., got {key!r}")
        groups[prefix][name] = value
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
