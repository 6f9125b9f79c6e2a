"""Steering vectors on disk and in memory: one direction per layer plus the facts needed to trust it.

Format (contract section 8), for a vector called NAME:

    NAME.safetensors   "directions" float32 (num_layers, hidden); optional "midpoints" float32 (num_layers,)
    NAME.json          format_version, name, description, model_id, model_fingerprint, hidden_size,
                       num_layers, method, recommended_layers, layer_norms, default_alpha,
                       dataset_hash, created, and an optional "extra" object;
                       optional: alpha_unit ("class_mean_total" | "per_layer"), calibrated,
                       calibration (coherent_range, recommended_alpha, the sweep; steering/calibration.py)

alpha_unit says what an add's alpha means (steering/interventions.py). Vectors
built from class means (method mean_diff or pca) use "class_mean_total": the
total shift across the steered layers in class-mean differences. Imported
llama.cpp / repeng control vectors use "per_layer": alpha times the direction
at every steered layer. A file without the field gets the unit its method implies.

Row l is a direction in the output of decoder block l (0-based). Layers without
a direction hold a zero row. Everything is validated on load, on install and on
save, so a vector that exists in memory always satisfies the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .artifacts import (
    ArtifactLibrary,
    FORMAT_VERSION,
    ArtifactError,
    check_pair,
    commit_pair,
    content_sha256,
    check_finite,
    check_model_match,
    check_name,
    path_in_library,
    read_json,
    require_fields,
    utc_now,
)
from .interventions import AlphaUnit, Intervention, Op, Scope

JSON_SUFFIX = ".json"
TENSOR_SUFFIX = ".safetensors"
DIRECTIONS_KEY = "directions"
MIDPOINTS_KEY = "midpoints"
REQUIRED_FIELDS = (
    "format_version",
    "name",
    "description",
    "model_id",
    "model_fingerprint",
    "hidden_size",
    "num_layers",
    "method",
    "recommended_layers",
    "layer_norms",
    "default_alpha",
    "dataset_hash",
    "created",
)
# Operations whose alpha is a fraction of the component (1 = the whole of it),
# not a multiple of the direction: the vector's default_alpha does not apply to them.
FRACTION_OPS = (Op.ABLATE, Op.REFLECT)
# Methods whose directions are class-mean differences (PCA is scaled to the mean difference's projection).
CLASS_MEAN_METHODS = ("mean_diff", "pca")
ALPHA_UNIT_KEY = "alpha_unit"


# -- layer specs ----------------------------------------------------------------


def parse_layers(spec, num_layers: int) -> tuple[int, ...]:
    """Layers named by `spec`: an int, a list of ints, "all", "8-16" (inclusive), or "3,5,8-10".

    Returns sorted, distinct 0-based indices; raises ValueError naming the bad value.
    """
    if num_layers <= 0:
        raise ValueError(f"the model has no layers to steer (num_layers={num_layers})")
    if isinstance(spec, bool):  # bool is an int subclass; True is not layer 1
        raise ValueError(f"layers must be ints, a range like '8-16' or 'all', not {spec!r}")
    if isinstance(spec, (int, np.integer)):
        layers = [int(spec)]
    elif isinstance(spec, str):
        layers = _parse_layer_string(spec, num_layers)
    elif isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("layers is an empty list; give at least one layer")
        layers = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise ValueError(f"layers list entries must be ints, got {item!r}")
            layers.append(int(item))
    else:
        raise ValueError(f"layers must be ints, a range like '8-16' or 'all', not {spec!r}")
    bad = [l for l in layers if not 0 <= l < num_layers]
    if bad:
        raise ValueError(f"layers {spec!r}: {bad[0]} is out of range; the model has layers 0-{num_layers - 1}")
    return tuple(sorted(set(layers)))


def _parse_layer_string(spec: str, num_layers: int) -> list[int]:
    text = spec.strip().lower()
    if text == "all":
        return list(range(num_layers))
    if not text:
        raise ValueError("layers is an empty string; use e.g. '8-16', '12' or 'all'")
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            start, end = (int(lo), int(hi)) if sep else (int(part), int(part))
            if start > end:
                raise ValueError
        except ValueError:
            raise ValueError(f"layers {spec!r} is not understood; use e.g. '8-16', '3,5,8-10', 12 or 'all'") from None
        if end >= num_layers:  # before expanding: "0-999999999" must not build a billion-entry list
            raise ValueError(f"layers {spec!r}: {max(start, num_layers)} is out of range; the model has layers 0-{num_layers - 1}")
        layers.extend(range(start, end + 1))
    return layers


# -- the vector -------------------------------------------------------------------


@dataclass(eq=False)  # identity is sha256; numpy fields make == ambiguous
class SteeringVector:
    name: str
    directions: np.ndarray  # (num_layers, hidden) float32; zero rows for layers without a direction
    metadata: dict
    midpoints: np.ndarray | None = None  # (num_layers,) projection onto the unit direction to reflect about

    @property
    def sha256(self) -> str:
        """Identity: artifacts.content_sha256 of the tensors (directions, and midpoints when present)."""
        cached = self.__dict__.get("_sha256")
        if cached is not None and cached[0] is self.directions and cached[1] is self.midpoints:
            return cached[2]
        digest = content_sha256(self.tensors())
        self.__dict__["_sha256"] = (self.directions, self.midpoints, digest)
        return digest

    @property
    def num_layers(self) -> int:
        return int(self.directions.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.directions.shape[1])

    @property
    def recommended_layers(self) -> tuple[int, ...]:
        return tuple(int(l) for l in self.metadata.get("recommended_layers", ()))

    @property
    def default_alpha(self) -> float:
        return float(self.metadata.get("default_alpha", 1.0))

    @property
    def alpha_unit(self) -> AlphaUnit:
        """What an add's alpha means for this vector: the stored unit, else the one its method implies."""
        stored = self.metadata.get(ALPHA_UNIT_KEY)
        if stored is not None:
            return AlphaUnit(stored)
        return AlphaUnit.TOTAL if self.metadata.get("method") in CLASS_MEAN_METHODS else AlphaUnit.PER_LAYER

    @property
    def calibrated(self) -> bool:
        return bool(self.metadata.get("calibrated", False)) and isinstance(self.metadata.get("calibration"), dict)

    @property
    def coherent_range(self) -> tuple[float, float] | None:
        """The add alphas calibration found coherent, (low, high); None when not calibrated."""
        if not self.calibrated:
            return None
        low, high = self.metadata["calibration"]["coherent_range"]
        return float(low), float(high)

    @property
    def description(self) -> str:
        return str(self.metadata.get("description", ""))

    def intervention(self, alpha: float | None = None, op="add", layers=None, scope="all", value=None) -> Intervention:
        """An Intervention applying this vector.

        alpha None means default_alpha for add, and 1 (the whole component) for
        ablate and reflect. layers None means the recommended layers.
        """
        op = _parse_enum(Op, op, "op")
        scope = _parse_enum(Scope, scope, "scope")
        if alpha is None:
            alpha = 1.0 if op in FRACTION_OPS else self.default_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or not math.isfinite(alpha):
            raise ValueError(f"alpha for {self.name!r} must be a finite number, got {alpha!r}")
        if op is Op.CLAMP:
            if value is None:
                raise ValueError(f"op 'clamp' on {self.name!r} needs a value (the projection to set)")
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
                raise ValueError(f"clamp value for {self.name!r} must be a finite number, got {value!r}")
            value = float(value)
        chosen = self.recommended_layers if layers is None else parse_layers(layers, self.num_layers)
        if not chosen:
            raise ValueError(f"vector {self.name!r} has no recommended layers; pass layers explicitly")
        return Intervention(
            name=self.name,
            directions=self.directions,
            op=op,
            alpha=float(alpha),
            layers=tuple(chosen),
            scope=scope,
            value=value,
            midpoints=self.midpoints,
            key=self.sha256,
            alpha_unit=self.alpha_unit,
        )

    # -- files ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write NAME.safetensors then NAME.json into directory, each atomically; returns the json path.

        The json goes last: a library scan finds a vector only once both files are complete.
        """
        from safetensors.numpy import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path = path_in_library(directory, self.name, JSON_SUFFIX)
        tensor_path = path_in_library(directory, self.name, TENSOR_SUFFIX)
        meta = dict(self.metadata)
        meta["name"] = self.name
        validate_vector(json_path, self.name, meta, self.directions, self.midpoints)
        self.metadata = commit_pair(tensor_path, save(self.tensors()), json_path, meta)
        return json_path

    def validate(self, path: str | Path | None = None, *, fingerprint: str | None = None,
                 hidden_size: int | None = None, num_layers: int | None = None) -> None:
        """ArtifactError(path, reason) unless this vector is usable (with that model, when its facts are given)."""
        where = path if path is not None else f"<vector {self.name!r}>"
        validate_vector(where, self.name, {**self.metadata, "name": self.name}, self.directions, self.midpoints)
        check_expected(where, self.metadata, fingerprint=fingerprint, hidden_size=hidden_size, num_layers=num_layers)

    def tensors(self) -> dict[str, np.ndarray]:
        tensors = {DIRECTIONS_KEY: np.ascontiguousarray(self.directions, dtype=np.float32)}
        if self.midpoints is not None:
            tensors[MIDPOINTS_KEY] = np.ascontiguousarray(self.midpoints, dtype=np.float32)
        return tensors

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        fingerprint: str | None = None,
        hidden_size: int | None = None,
        num_layers: int | None = None,
    ) -> "SteeringVector":
        """Load NAME.json + NAME.safetensors (path: either file or the stem); ArtifactError on anything wrong."""
        json_path, tensor_path = vector_paths(path)
        meta = read_json(json_path)
        try:
            tensor_bytes = tensor_path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(tensor_path, "file not found (the vector's directions)") from None
        except OSError as exc:
            raise ArtifactError(tensor_path, f"cannot read: {exc}") from None
        directions, midpoints = _read_tensors(tensor_path, tensor_bytes)
        require_fields(json_path, meta, REQUIRED_FIELDS)
        name = meta["name"]
        check_name(name, json_path)
        stem = json_path.name[: -len(JSON_SUFFIX)]
        if name != stem:
            raise ArtifactError(json_path, f"name {name!r} does not match the file name {stem!r}")
        validate_vector(json_path, name, meta, directions, midpoints)
        check_expected(json_path, meta, fingerprint=fingerprint, hidden_size=hidden_size, num_layers=num_layers)
        check_pair(json_path, meta, tensor_path, tensor_bytes)
        return cls(name=name, directions=directions, metadata=meta, midpoints=midpoints)

    def describe(self) -> dict:
        """Metadata plus identity, JSON-safe (what GET /v1/steering/vectors lists)."""
        out = _json_safe(dict(self.metadata))
        out["name"] = self.name
        out["sha256"] = self.sha256
        out["has_midpoints"] = self.midpoints is not None
        out[ALPHA_UNIT_KEY] = self.alpha_unit.value
        out["calibrated"] = self.calibrated
        if self.calibrated:
            out["coherent_range"] = list(self.coherent_range)
            out["recommended_alpha"] = float(self.metadata["calibration"]["recommended_alpha"])
        return out


def _parse_enum(enum_cls, value, field: str):
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum_cls)
        raise ValueError(f"{field} {value!r} is not one of {allowed}") from None


def build_metadata(
    name: str,
    *,
    hidden_size: int,
    num_layers: int,
    method: str,
    recommended_layers: Sequence[int],
    layer_norms: Sequence[float] | None = None,
    default_alpha: float = 1.0,
    model_id: str | None = None,
    model_fingerprint: str | None = None,
    description: str = "",
    dataset_hash: str | None = None,
    extra: dict | None = None,
    alpha_unit: AlphaUnit | str | None = None,
) -> dict:
    """A complete NAME.json dict; layer_norms unknown (e.g. imported vectors) are stored as zeros."""
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "model_id": model_id,
        "model_fingerprint": model_fingerprint,
        "hidden_size": int(hidden_size),
        "num_layers": int(num_layers),
        "method": method,
        "recommended_layers": [int(l) for l in recommended_layers],
        "layer_norms": [float(x) for x in (layer_norms if layer_norms is not None else [0.0] * num_layers)],
        "default_alpha": float(default_alpha),
        "dataset_hash": dataset_hash,
        "created": utc_now(),
    }
    if alpha_unit is not None:
        meta[ALPHA_UNIT_KEY] = AlphaUnit(alpha_unit).value
    if extra:
        meta["extra"] = _json_safe(extra)
    return meta


# -- validation -------------------------------------------------------------------


def vector_paths(path: str | Path) -> tuple[Path, Path]:
    """(NAME.json, NAME.safetensors) for a path naming either file or their common stem."""
    text = str(path)
    if text.endswith(JSON_SUFFIX):
        stem = text[: -len(JSON_SUFFIX)]
    elif text.endswith(TENSOR_SUFFIX):
        stem = text[: -len(TENSOR_SUFFIX)]
    else:
        stem = text  # names may contain dots, so no Path.suffix guessing
    return Path(stem + JSON_SUFFIX), Path(stem + TENSOR_SUFFIX)


def _read_tensors(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ArtifactError(path, f"not a valid safetensors file: {exc}") from None
    if DIRECTIONS_KEY not in tensors:
        raise ArtifactError(path, f"no {DIRECTIONS_KEY!r} tensor (found: {', '.join(sorted(tensors)) or 'none'})")
    return tensors[DIRECTIONS_KEY], tensors.get(MIDPOINTS_KEY)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def validate_vector(path, name: str, meta: dict, directions, midpoints) -> None:
    """Every rule a vector obeys; ArtifactError(path, reason) on the first broken one."""
    check_name(name, path)
    require_fields(path, meta, REQUIRED_FIELDS)
    if meta.get("name") != name:
        raise ArtifactError(path, f"metadata name {meta.get('name')!r} does not match {name!r}")
    version = meta["format_version"]
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise ArtifactError(path, f"format_version {version!r} is not supported (this build reads 1-{FORMAT_VERSION})")
    for key in ("hidden_size", "num_layers"):
        if not _is_int(meta[key]) or meta[key] <= 0:
            raise ArtifactError(path, f"{key} must be a positive integer, got {meta[key]!r}")
    for key in ("description", "method"):
        if not isinstance(meta[key], str):
            raise ArtifactError(path, f"{key} must be a string, got {type(meta[key]).__name__}")
    for key in ("model_id", "model_fingerprint", "dataset_hash"):
        if meta[key] is not None and not isinstance(meta[key], str):
            raise ArtifactError(path, f"{key} must be a string or null, got {type(meta[key]).__name__}")
    if "extra" in meta and not isinstance(meta["extra"], dict):
        raise ArtifactError(path, "extra must be a JSON object")
    if ALPHA_UNIT_KEY in meta and meta[ALPHA_UNIT_KEY] not in {u.value for u in AlphaUnit}:
        allowed = ", ".join(u.value for u in AlphaUnit)
        raise ArtifactError(path, f"alpha_unit {meta[ALPHA_UNIT_KEY]!r} is not one of {allowed}")
    _validate_calibration(path, meta)
    L, D = meta["num_layers"], meta["hidden_size"]
    if not isinstance(directions, np.ndarray) or directions.dtype != np.float32:
        got = getattr(directions, "dtype", type(directions).__name__)
        raise ArtifactError(path, f"directions must be float32, got {got}")
    if directions.shape != (L, D):
        raise ArtifactError(path, f"directions have shape {tuple(directions.shape)}, expected (num_layers={L}, hidden_size={D})")
    check_finite(path, "directions", directions)
    if midpoints is not None:
        if not isinstance(midpoints, np.ndarray) or midpoints.dtype != np.float32:
            raise ArtifactError(path, f"midpoints must be float32, got {getattr(midpoints, 'dtype', type(midpoints).__name__)}")
        if midpoints.shape != (L,):
            raise ArtifactError(path, f"midpoints have shape {tuple(midpoints.shape)}, expected ({L},)")
        check_finite(path, "midpoints", midpoints)
    norms = meta["layer_norms"]
    if not isinstance(norms, list) or len(norms) != L or not all(_is_number(x) and x >= 0 for x in norms):
        raise ArtifactError(path, f"layer_norms must be a list of {L} finite non-negative numbers")
    if not _is_number(meta["default_alpha"]):
        raise ArtifactError(path, f"default_alpha must be a finite number, got {meta['default_alpha']!r}")
    layers = meta["recommended_layers"]
    if not isinstance(layers, list) or not layers or not all(_is_int(l) for l in layers):
        raise ArtifactError(path, "recommended_layers must be a non-empty list of layer indices")
    bad = [l for l in layers if not 0 <= l < L]
    if bad:
        raise ArtifactError(path, f"recommended layer {bad[0]} is out of range for {L} layers")
    zero = [l for l in layers if not np.any(directions[l])]
    if zero:
        raise ArtifactError(path, f"recommended layer {zero[0]} has an all-zero direction")


def _validate_calibration(path, meta: dict) -> None:
    if "calibrated" in meta and not isinstance(meta["calibrated"], bool):
        raise ArtifactError(path, "calibrated must be true or false")
    if not meta.get("calibrated"):
        return
    cal = meta.get("calibration")
    if not isinstance(cal, dict):
        raise ArtifactError(path, "calibrated is true but there is no calibration object")
    span = cal.get("coherent_range")
    if not isinstance(span, list) or len(span) != 2 or not all(_is_number(x) for x in span) or span[0] > span[1]:
        raise ArtifactError(path, "calibration.coherent_range must be [low, high] with low <= high")
    if not _is_number(cal.get("recommended_alpha")):
        raise ArtifactError(path, "calibration.recommended_alpha must be a finite number")


def check_expected(path, meta: dict, *, fingerprint=None, hidden_size=None, num_layers=None) -> None:
    """Refuse a vector built for another model (hidden size, fingerprint, layer count)."""
    check_model_match(path, meta, fingerprint=fingerprint, hidden_size=hidden_size)
    if num_layers is not None and meta.get("num_layers") != int(num_layers):
        raise ArtifactError(path, f"layer count {meta.get('num_layers')} does not match the model's {num_layers}")


def _json_safe(value):
    """Plain JSON types only; NaN/Inf become null (JSON out is strict)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


# -- atomic writes ------------------------------------------------------------------


# -- the library ----------------------------------------------------------------------


class VectorLibrary(ArtifactLibrary):
    """The vectors in one directory, checked against one model (copy-on-write, see ArtifactLibrary)."""

    JSON_SUFFIX = JSON_SUFFIX

    def _load_file(self, json_path: Path) -> SteeringVector:
        return SteeringVector.load(json_path, **self._model_checks())

    def install(self, name: str, safetensors_bytes: bytes, metadata: dict) -> SteeringVector:
        """Validate an uploaded vector completely, then write it atomically and register it.

        A vector of the same name is replaced.
        """
        json_path = path_in_library(self.root, name, JSON_SUFFIX)
        tensor_path = path_in_library(self.root, name, TENSOR_SUFFIX)
        if not isinstance(metadata, dict):
            raise ArtifactError(json_path, "metadata must be a JSON object")
        if not isinstance(safetensors_bytes, (bytes, bytearray)):
            raise ArtifactError(tensor_path, "the directions must be the bytes of a safetensors file")
        meta = dict(metadata)
        if meta.setdefault("name", name) != name:
            raise ArtifactError(json_path, f"metadata name {meta['name']!r} does not match {name!r}")
        meta = _json_safe(meta)
        directions, midpoints = _read_tensors(tensor_path, bytes(safetensors_bytes))
        validate_vector(json_path, name, meta, directions, midpoints)
        check_expected(json_path, meta, **self._model_checks())
        vector = SteeringVector(name=name, directions=directions, metadata=meta, midpoints=midpoints)
        self.add(vector)
        return vector

    def add(self, vector: SteeringVector) -> None:
        """Save vector into root (replacing one of the same name) and register it."""
        json_path = path_in_library(self.root, vector.name, JSON_SUFFIX)
        check_expected(json_path, vector.metadata, **self._model_checks())
        with self._lock:
            vector.save(self.root)
            self._put(vector.name, vector)

    def remove(self, name: str) -> None:
        """Forget name and delete its files; KeyError if it is not loaded."""
        with self._lock:
            if name not in self._items:
                raise KeyError(name)
            json_path = path_in_library(self.root, name, JSON_SUFFIX)
            tensor_path = path_in_library(self.root, name, TENSOR_SUFFIX)
            self._drop(name)
            # json first: a crash between the two leaves an orphan tensor file, never a listed vector without data.
            json_path.unlink(missing_ok=True)
            tensor_path.unlink(missing_ok=True)
