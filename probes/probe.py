"""The probe artifact: per-layer linear detectors over the residual stream, on disk and in memory.

A probe is NAME.safetensors (tensors "layers", "weights", "bias", "mean",
"scale") plus NAME.json (labels, best layer, cross-validated quality per
layer, threshold, the model it was trained on). At layer layers[k] the
probability of the positive label is

    sigmoid(((h - mean[k]) / scale[k]) . weights[k] + bias[k])

Loading validates everything, so a bad file is refused with its path and the
reason instead of failing at the first request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlx_interp.steering.artifacts import (
    ArtifactLibrary,
    FORMAT_VERSION,
    ArtifactError,
    check_pair,
    commit_pair,
    content_sha256,
    check_finite,
    check_model_match,
    check_name,
    json_safe_float,
    path_in_library,
    read_json,
    json_text,
    require_fields,
)

METHODS = ("logistic", "diff_means")
from .aggregation import AGGREGATIONS, DEFAULT_EMA_WINDOW
from .positions import POSITIONS, LEGACY_POSITIONS, declared_position, reads_per_token
TENSOR_NAMES = ("layers", "weights", "bias", "mean", "scale")
REQUIRED_FIELDS = ("name", "labels", "method", "best_layer", "threshold", "hidden_size")
JSON_SUFFIX = ".json"
TENSOR_SUFFIX = ".safetensors"


@dataclass
class Probe:
    name: str
    layers: tuple[int, ...]
    weights: np.ndarray  # (K, D) float32
    bias: np.ndarray  # (K,)
    mean: np.ndarray  # (K, D)
    scale: np.ndarray  # (K, D), > 0
    metadata: dict
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.layers = tuple(int(l) for l in np.asarray(self.layers).reshape(-1))
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.scale = np.asarray(self.scale, dtype=np.float32)

    # -- metadata views --------------------------------------------------------
    @property
    def best_layer(self) -> int:
        return int(self.metadata["best_layer"])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def aggregation(self) -> str:
        return str(self.metadata.get("aggregation", "mean"))

    @property
    def position(self) -> str:
        """Where it was trained to read (legacy names mapped; none declared: per token)."""
        return declared_position(self.metadata)

    @property
    def per_token(self) -> bool:
        """Is it read at every token (a `token` probe)?"""
        return reads_per_token(self.position)

    @property
    def token_threshold(self) -> float:
        """Threshold of one token's reading (token probes); `threshold` is that of the response score."""
        return float(self.metadata.get("token_threshold", self.threshold))

    @property
    def ema_window(self) -> int:
        return int(self.metadata.get("ema_window", DEFAULT_EMA_WINDOW))

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.metadata["labels"]]

    @property
    def hidden_size(self) -> int:
        return int(self.weights.shape[1])

    @property
    def sha256(self) -> str:
        """Identity: artifacts.content_sha256 of the tensors (the same meaning as a vector's)."""
        if self._sha256 is None:
            self._sha256 = content_sha256(self.tensors())
        return self._sha256

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "layers": np.asarray(self.layers, dtype=np.int32),
            "weights": self.weights,
            "bias": self.bias,
            "mean": self.mean,
            "scale": self.scale,
        }

    def tensor_bytes(self) -> bytes:
        from safetensors.numpy import save

        return save(self.tensors())

    # -- scoring (reference implementation; the server uses probes.scoring.ProbeBank) --
    def score_numpy(self, hidden: np.ndarray) -> np.ndarray:
        """(N, L, D) residual states of every layer -> (N, K) probabilities, one per probe layer."""
        hidden = np.asarray(hidden, dtype=np.float64)
        if hidden.ndim == 2:
            return self.score_numpy(hidden[None])[0]
        if hidden.ndim != 3 or hidden.shape[2] != self.hidden_size:
            raise ValueError(f"expected hidden states (N, L, {self.hidden_size}), got {hidden.shape}")
        if max(self.layers) >= hidden.shape[1]:
            raise ValueError(f"probe {self.name} reads layer {max(self.layers)} but hidden has {hidden.shape[1]} layers")
        picked = hidden[:, list(self.layers), :]  # (N, K, D)
        z = (picked - self.mean.astype(np.float64)) / self.scale.astype(np.float64)
        logits = np.einsum("nkd,kd->nk", z, self.weights.astype(np.float64)) + self.bias.astype(np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    # -- validation --------------------------------------------------------------
    def validate(
        self,
        path: str | Path | None = None,
        *,
        fingerprint: str | None = None,
        hidden_size: int | None = None,
        num_layers: int | None = None,
    ) -> None:
        """Raise ArtifactError(path, reason) unless this probe is usable (for that model, if given)."""
        where = str(path) if path is not None else f"<probe {self.name!r}>"
        meta = self.metadata
        if not isinstance(meta, dict):
            raise ArtifactError(where, "metadata must be a JSON object")
        require_fields(where, meta, REQUIRED_FIELDS)
        check_name(self.name, where)
        if meta["name"] != self.name:
            raise ArtifactError(where, f"metadata name {meta['name']!r} differs from the probe name {self.name!r}")
        version = meta.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
            raise ArtifactError(where, f"format_version {version!r} is not supported (this build reads {FORMAT_VERSION})")
        labels = meta["labels"]
        if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(x, str) and x for x in labels)):
            raise ArtifactError(where, "labels must be a list of two non-empty strings [negative, positive]")
        if labels[0] == labels[1]:
            raise ArtifactError(where, f"labels must differ, got {labels!r}")
        if meta["method"] not in METHODS:
            raise ArtifactError(where, f"method {meta['method']!r} is not one of {', '.join(METHODS)}")
        if meta.get("aggregation", "mean") not in AGGREGATIONS:
            raise ArtifactError(where, f"aggregation {meta.get('aggregation')!r} is not one of {', '.join(AGGREGATIONS)}")
        position = meta.get("position")
        if position is not None and position not in POSITIONS and position not in LEGACY_POSITIONS:
            raise ArtifactError(where, f"position {position!r} is not one of {', '.join(POSITIONS)}")
        window = meta.get("ema_window", DEFAULT_EMA_WINDOW)
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ArtifactError(where, f"ema_window {window!r} must be a positive integer")

        # tensors: shapes, finiteness, positive scale
        K = len(self.layers)
        if K == 0:
            raise ArtifactError(where, "probe has no layers")
        if self.weights.ndim != 2 or self.weights.shape[0] != K:
            raise ArtifactError(where, f"weights must have shape ({K}, D), got {self.weights.shape}")
        D = self.weights.shape[1]
        for what, arr, shape in (("bias", self.bias, (K,)), ("mean", self.mean, (K, D)), ("scale", self.scale, (K, D))):
            if arr.shape != shape:
                raise ArtifactError(where, f"{what} must have shape {shape}, got {arr.shape}")
        for what in ("weights", "bias", "mean", "scale"):
            check_finite(where, what, getattr(self, what))
        if np.any(self.scale <= 0):
            raise ArtifactError(where, "scale must be > 0 everywhere")
        if _int_field(meta, "hidden_size") != D:
            raise ArtifactError(where, f"metadata hidden_size {meta['hidden_size']} does not match the weights' {D}")

        # layers: in range, unique, best among them
        if len(set(self.layers)) != K:
            raise ArtifactError(where, f"duplicate layer index in {list(self.layers)}")
        limits = [n for n in (meta.get("num_layers"), num_layers) if n is not None]
        for n in limits:
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ArtifactError(where, f"num_layers {n!r} must be a positive integer")
        bound = min(limits) if limits else None
        for layer in self.layers:
            if layer < 0 or (bound is not None and layer >= bound):
                raise ArtifactError(where, f"layer index {layer} is out of range for a model with {bound} layers")
        best = meta["best_layer"]
        if not isinstance(best, int) or isinstance(best, bool) or best not in self.layers:
            raise ArtifactError(where, f"best_layer {best!r} is not one of the probe's layers {list(self.layers)}")

        _check_probability(where, meta, "threshold", required=True)
        _check_probability(where, meta, "threshold_fpr", required=False)
        _check_probability(where, meta, "token_threshold", required=False)
        per_layer = meta.get("per_layer")
        if per_layer is not None:
            if not isinstance(per_layer, list) or len(per_layer) != K:
                raise ArtifactError(where, f"per_layer must be a list of {K} entries, one per layer")
            for k, entry in enumerate(per_layer):
                if not isinstance(entry, dict) or entry.get("layer") != self.layers[k]:
                    raise ArtifactError(where, f"per_layer entry {k} must describe layer {self.layers[k]}")

        # the model it is used with
        if num_layers is not None and meta.get("num_layers") not in (None, num_layers):
            raise ArtifactError(where, f"probe was trained on a model with {meta['num_layers']} layers, this one has {num_layers}")
        check_model_match(where, meta, fingerprint=fingerprint, hidden_size=hidden_size)

    # -- disk ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write NAME.safetensors then NAME.json into directory, each atomically; returns the json path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.validate()
        json_path = path_in_library(directory, self.name, JSON_SUFFIX)
        tensor_path = path_in_library(directory, self.name, TENSOR_SUFFIX)
        data = self.tensor_bytes()
        self.metadata = commit_pair(tensor_path, data, json_path, self.metadata)
        return json_path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        fingerprint: str | None = None,
        hidden_size: int | None = None,
        num_layers: int | None = None,
    ) -> "Probe":
        """Load NAME.json + NAME.safetensors (path: either file, or the stem) and validate them."""
        json_path, tensor_path = artifact_paths(path)
        meta = read_json(json_path)
        stem = json_path.name[: -len(JSON_SUFFIX)]
        name = meta.get("name")
        check_name(name, json_path)
        if name != stem:
            raise ArtifactError(json_path, f"name {name!r} does not match the file name {stem!r}")
        try:
            data = tensor_path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(tensor_path, "file not found") from None
        except OSError as exc:
            raise ArtifactError(tensor_path, f"cannot read: {exc}") from None
        probe = probe_from_bytes(tensor_path, data, meta)
        probe.validate(json_path, fingerprint=fingerprint, hidden_size=hidden_size, num_layers=num_layers)
        check_pair(json_path, meta, tensor_path, data)
        return probe

    def describe(self) -> dict:
        """A JSON-safe summary: what `GET /v1/probes` and `probes list` show."""
        meta = self.metadata
        best = next((e for e in meta.get("per_layer") or [] if e.get("layer") == self.best_layer), {})
        return {
            "name": self.name,
            "description": meta.get("description", ""),
            "labels": self.labels,
            "method": meta.get("method"),
            "layers": list(self.layers),
            "best_layer": self.best_layer,
            "aggregation": self.aggregation,
            "position": self.position,
            "threshold": json_safe_float(self.threshold),
            "token_threshold": _safe(meta.get("token_threshold")),
            "threshold_fpr": _safe(meta.get("threshold_fpr")),
            # the held-out AUROC of the whole procedure (nested CV) where recorded, else the best layer's CV AUROC
            "auroc": _safe(meta["auroc"]) if "auroc" in meta else _safe(best.get("auroc_mean")),
            "auroc_ci": meta.get("auroc_ci"),
            "accuracy": _safe(best.get("accuracy_mean")),
            "model_id": meta.get("model_id"),
            "model_fingerprint": meta.get("model_fingerprint"),
            "hidden_size": self.hidden_size,
            "num_layers": meta.get("num_layers"),
            "n_examples": meta.get("n_examples"),
            "dataset_hash": meta.get("dataset_hash"),
            "created": meta.get("created"),
            "sha256": self.sha256,
        }


def artifact_paths(path: str | Path) -> tuple[Path, Path]:
    """(json, safetensors) for a path naming either file or their common stem."""
    path = Path(path)
    if path.name.endswith(JSON_SUFFIX):
        stem = path.name[: -len(JSON_SUFFIX)]
    elif path.name.endswith(TENSOR_SUFFIX):
        stem = path.name[: -len(TENSOR_SUFFIX)]
    else:
        stem = path.name
    return path.with_name(stem + JSON_SUFFIX), path.with_name(stem + TENSOR_SUFFIX)


def probe_from_bytes(where: str | Path, data: bytes, meta: dict) -> Probe:
    """Parse safetensors bytes into a Probe (not yet validated)."""
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for every kind of bad header
        raise ArtifactError(where, f"not a readable safetensors file: {exc}") from None
    missing = [t for t in TENSOR_NAMES if t not in tensors]
    if missing:
        raise ArtifactError(where, f"missing tensors: {', '.join(missing)}")
    extra = sorted(set(tensors) - set(TENSOR_NAMES))
    if extra:
        raise ArtifactError(where, f"unexpected tensors: {', '.join(extra)}")
    layers = tensors["layers"]
    if layers.ndim != 1 or not np.issubdtype(layers.dtype, np.integer):
        raise ArtifactError(where, f"layers must be a 1-D integer tensor, got {layers.dtype} {layers.shape}")
    for t in ("weights", "bias", "mean", "scale"):
        if not np.issubdtype(tensors[t].dtype, np.floating):
            raise ArtifactError(where, f"{t} must be floating point, got {tensors[t].dtype}")
    return Probe(
        name=meta.get("name"),
        layers=tuple(int(x) for x in layers),
        weights=tensors["weights"],
        bias=tensors["bias"],
        mean=tensors["mean"],
        scale=tensors["scale"],
        metadata=meta,
    )


class ProbeLibrary(ArtifactLibrary):
    """The probes of one folder, checked against one model (copy-on-write, see ArtifactLibrary)."""

    JSON_SUFFIX = JSON_SUFFIX

    def _load_file(self, json_path: Path) -> Probe:
        return Probe.load(json_path, **self._model_checks())

    @property
    def _probes(self) -> dict[str, Probe]:
        return self._items

    def probes(self) -> list[Probe]:
        return self.items()

    def install(self, name: str, safetensors_bytes: bytes, metadata: dict, *, overwrite: bool = True) -> Probe:
        """Validate an uploaded probe fully, then write it into root atomically and serve it."""
        json_path = path_in_library(self.root, name, JSON_SUFFIX)
        tensor_path = path_in_library(self.root, name, TENSOR_SUFFIX)
        if not isinstance(metadata, dict):
            raise ArtifactError(json_path, "metadata must be a JSON object")
        if metadata.get("name", name) != name:
            raise ArtifactError(json_path, f"metadata name {metadata.get('name')!r} differs from {name!r}")
        meta = {**metadata, "name": name}
        _json_bytes(meta)  # refuse NaN/Inf or unserialisable values before anything is written
        probe = probe_from_bytes(tensor_path, bytes(safetensors_bytes), meta)
        probe.validate(json_path, **self._model_checks())
        with self._lock:
            if not overwrite and (name in self._probes or json_path.exists()):
                raise FileExistsError(f"probe {name!r} already exists")
            self.root.mkdir(parents=True, exist_ok=True)
            probe.save(self.root)
            self._put(name, probe)
        return probe

    def add(self, probe: Probe) -> Probe:
        """Serve a probe held in memory (e.g. one just trained) without writing it to root."""
        probe.validate(**self._model_checks())
        with self._lock:
            self._put(probe.name, probe)
        return probe

    def remove(self, name: str) -> None:
        """Stop serving name and delete its files from root; KeyError if unknown."""
        json_path = path_in_library(self.root, name, JSON_SUFFIX)
        tensor_path = path_in_library(self.root, name, TENSOR_SUFFIX)
        with self._lock:
            on_disk = json_path.exists() or tensor_path.exists()
            if name not in self._probes and not on_disk:
                raise KeyError(name)
            for p in (json_path, tensor_path):
                p.unlink(missing_ok=True)
            self._drop(name)


# -- helpers -----------------------------------------------------------------------------


def _int_field(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _check_probability(where: str, meta: dict, key: str, *, required: bool) -> None:
    value = meta.get(key)
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ArtifactError(where, f"{key} {value!r} must be a number in [0, 1]")


def _safe(value):
    return json_safe_float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _json_bytes(meta: dict) -> bytes:
    try:
        return json_text(meta).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"<metadata {meta.get('name')!r}>", f"metadata is not strict JSON: {exc}") from None
