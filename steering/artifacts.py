"""Rules every artifact (steering vector, probe) obeys on disk: names, paths, finiteness, model match.

Loaders raise ArtifactError with the file and the reason so the CLI can print one
line and the server can refuse a file while it keeps serving.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORMAT_VERSION = 1


def content_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """An artifact's identity, the `sha256` of vectors and probes alike: a hash of what the tensors hold.

    Over each tensor in name order: its name, dtype, shape and little-endian bytes.
    It does not depend on how a file was serialised (the safetensors header, key
    order), so a vector or probe keeps its sha256 through save, load, upload and
    re-export. (The `tensors_sha256` metadata field is different: the bytes of the
    tensor file, checked when a pair is loaded; see commit_pair.)
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        h.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        h.update(array.tobytes())
    return h.hexdigest()


@runtime_checkable
class Artifact(Protocol):
    """What steering vectors and probes share: NAME.safetensors + NAME.json in a library folder."""

    name: str
    metadata: dict

    @property
    def sha256(self) -> str:
        """content_sha256 of tensors()."""
        ...

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays written to NAME.safetensors."""
        ...

    def validate(self, path: str | Path | None = None, *, fingerprint: str | None = None,
                 hidden_size: int | None = None, num_layers: int | None = None) -> None:
        """ArtifactError(path, reason) unless usable (with that model, when its facts are given)."""
        ...

    def save(self, directory: str | Path) -> Path:
        """Write the pair into directory (tensors first, JSON last, each atomically); the JSON's path."""
        ...

    def describe(self) -> dict:
        """A JSON-safe summary with name and sha256 (what the server and the CLI list)."""
        ...


class ArtifactError(ValueError):
    """An artifact file that cannot be used; str() names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def check_name(name: str, path: str | Path = "<name>") -> str:
    """Names are file stems: no separators, no '..', nothing a path could escape with."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
        raise ArtifactError(path, f"name {name!r} is not allowed; use 1-64 characters from [A-Za-z0-9_.-]")
    return name


def path_in_library(library: str | Path, name: str, suffix: str) -> Path:
    """The path of NAME+suffix inside library, refusing anything that would leave it."""
    check_name(name, Path(library) / f"{name}{suffix}")
    root = Path(library).resolve()
    candidate = (root / f"{name}{suffix}").resolve()
    if candidate.parent != root:
        raise ArtifactError(candidate, f"path leaves the library {root}")
    return candidate


def check_finite(path: str | Path, what: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ArtifactError(path, f"{what} contains NaN or Inf values")


def check_model_match(path: str | Path, meta: dict, *, fingerprint: str | None, hidden_size: int | None) -> None:
    """Refuse an artifact built for a different model, at load time rather than at the first request."""
    if hidden_size is not None and int(meta.get("hidden_size", -1)) != int(hidden_size):
        raise ArtifactError(path, f"hidden size {meta.get('hidden_size')} does not match the model's {hidden_size}")
    if fingerprint is not None and meta.get("model_fingerprint") not in (None, fingerprint):
        raise ArtifactError(
            path,
            f"model fingerprint {str(meta.get('model_fingerprint'))[:12]} does not match the loaded model's {fingerprint[:12]}",
        )


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"cannot read: {exc}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ArtifactError(path, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(path, "metadata must be a JSON object")
    return data


def json_text(data: dict) -> str:
    """Metadata as written to NAME.json: indented, strict (ValueError on NaN/Inf)."""
    return json.dumps(data, indent=2, allow_nan=False, sort_keys=False) + "\n"


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json_text(data), encoding="utf-8")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over path: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- a tensor file and its metadata, replaced as one ------------------------------------------
#
# An artifact is two files, and no rename covers two files at once. So the JSON
# names the sha256 of the tensor file it belongs to, the old tensor file is kept
# (as a hard link, NAME.safetensors.prev) until the new JSON is in place, and
# recover_pair() puts the old one back when a writer died in between. Whatever
# kills the writer, a reader finds the old pair or the new pair, never new
# directions under old metadata; and a mismatched pair is refused on load.

TENSORS_HASH_FIELD = "tensors_sha256"
PREVIOUS_SUFFIX = ".prev"
TMP_SUFFIX = ".tmp"  # atomic_write's leftovers: .NAME.<random>.tmp


def previous_path(tensor_path: str | Path) -> Path:
    tensor_path = Path(tensor_path)
    return tensor_path.with_name(tensor_path.name + PREVIOUS_SUFFIX)


def commit_pair(tensor_path: str | Path, tensor_bytes: bytes, json_path: str | Path, meta: dict) -> dict:
    """Replace (or create) tensor_path and json_path as one; returns the metadata as written."""
    tensor_path, json_path = Path(tensor_path), Path(json_path)
    recover_pair(json_path, tensor_path)  # a pair half-replaced earlier is settled before this one moves
    meta = {**meta, TENSORS_HASH_FIELD: hashlib.sha256(tensor_bytes).hexdigest()}
    body = json_text(meta).encode("utf-8")
    prev = previous_path(tensor_path)
    if tensor_path.exists() and json_path.exists():
        prev.unlink(missing_ok=True)
        os.link(tensor_path, prev)
    atomic_write(tensor_path, tensor_bytes)
    atomic_write(json_path, body)
    prev.unlink(missing_ok=True)
    return meta


def recover_pair(json_path: str | Path, tensor_path: str | Path) -> None:
    """Settle a pair whose writer died between its two renames: keep whichever tensor file the JSON names."""
    json_path, tensor_path = Path(json_path), Path(tensor_path)
    prev = previous_path(tensor_path)
    if not prev.exists():
        return
    try:
        wanted = read_json(json_path).get(TENSORS_HASH_FIELD)
    except ArtifactError:
        wanted = None
    if wanted is None:  # nothing to compare with (no JSON, or one from before the hash): the newer file stays
        prev.unlink(missing_ok=True)
    elif tensor_path.exists() and file_sha256(tensor_path) == wanted:
        prev.unlink(missing_ok=True)
    elif file_sha256(prev) == wanted:
        os.replace(prev, tensor_path)
    # else: neither file is the one the JSON names; leave both for a person to look at (load refuses the pair)


def check_pair(json_path: str | Path, meta: dict, tensor_path: str | Path, tensor_bytes: bytes) -> None:
    """Refuse a tensor file that is not the one its JSON was written with (metadata from before the hash pass)."""
    wanted = meta.get(TENSORS_HASH_FIELD)
    if wanted is None:
        return
    if not isinstance(wanted, str) or hashlib.sha256(tensor_bytes).hexdigest() != wanted:
        raise ArtifactError(
            tensor_path,
            f"does not match {Path(json_path).name} ({TENSORS_HASH_FIELD}); the pair was not written together",
        )


def sweep_leftovers(root: str | Path) -> list[Path]:
    """Remove temporary files that writers killed mid-write left behind, and settle half-replaced pairs."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for tmp in root.glob(".*" + TMP_SUFFIX):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    for prev in root.glob("*" + PREVIOUS_SUFFIX):
        tensor_path = prev.with_name(prev.name[: -len(PREVIOUS_SUFFIX)])
        stem = tensor_path.name.rsplit(".", 1)[0]
        recover_pair(tensor_path.with_name(stem + ".json"), tensor_path)
    return removed


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def require_fields(path: str | Path, meta: dict, fields: Iterable[str]) -> None:
    missing = [f for f in fields if f not in meta]
    if missing:
        raise ArtifactError(path, f"metadata is missing {', '.join(missing)}")


def dataset_hash(paths: Iterable[str | Path]) -> str:
    """sha256 over the bytes of the dataset files, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def json_safe_float(x: float) -> float | None:
    """Floats that JSON can carry: NaN and Inf become null."""
    x = float(x)
    return x if math.isfinite(x) else None


class ArtifactLibrary:
    """The artifacts (vectors or probes) of one folder, checked against one model.

    Readers (the server's model thread) look names up without a lock: the
    name -> artifact dict is never changed in place, only replaced as a whole
    by writers, who serialise on a lock. A reader sees the old or the new
    mapping, never half of an update. Subclasses say how one file is loaded
    (`_load_file`) and add their own install/add/remove on top of `_put`/`_drop`.
    """

    JSON_SUFFIX = ".json"

    def __init__(self, root: str | Path, *, fingerprint: str | None = None, hidden_size: int | None = None, num_layers: int | None = None):
        import threading

        self.root = Path(root)
        self.fingerprint = fingerprint
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _model_checks(self) -> dict:
        return {"fingerprint": self.fingerprint, "hidden_size": self.hidden_size, "num_layers": self.num_layers}

    def _load_file(self, json_path: Path):  # -> artifact with a .name
        raise NotImplementedError

    def load_all(self, sweep: bool = False) -> list[ArtifactError]:
        """(Re)load every NAME.json in root; bad ones are skipped and returned, each with its reason.

        sweep: first remove what killed writers left behind (a library this process writes to).
        """
        loaded: dict[str, Any] = {}
        errors: list[ArtifactError] = []
        # held while scanning so an install or remove that lands meanwhile is not undone by the swap below
        with self._lock:
            if sweep and os.access(self.root, os.W_OK):
                sweep_leftovers(self.root)
            paths = sorted(self.root.glob("*" + self.JSON_SUFFIX)) if self.root.is_dir() else []
            for path in paths:
                try:
                    item = self._load_file(path)
                except ArtifactError as exc:
                    errors.append(exc)
                    continue
                loaded[item.name] = item
            self._items = loaded
        return errors

    def get(self, name: str):
        """The artifact called name; KeyError if there is none."""
        items = self._items
        if name not in items:
            raise KeyError(name)
        return items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list:
        """The artifacts in name order, from one snapshot."""
        snapshot = self._items
        return [snapshot[n] for n in sorted(snapshot)]

    def describe(self) -> list[dict]:
        return [item.describe() for item in self.items()]

    # Writers call these with self._lock held.
    def _put(self, name: str, item) -> None:
        self._items = {**self._items, name: item}

    def _drop(self, name: str) -> None:
        self._items = {k: v for k, v in self._items.items() if k != name}
