"""llama.cpp / repeng control vectors (GGUF) in and out.

The format: general.architecture = "controlvector", controlvector.model_hint
(a model family name, advisory), controlvector.layer_count (the number of
direction tensors), and one float32 tensor of width n_embd per layer named
"direction.N".

Layer numbering. llama.cpp's loader refuses "direction.0", places
"direction.N" in row N of its per-layer table (its buffer starts at layer 1,
"layer 0 is never present") and its graph adds row il to the output of
transformer block il (0-based loop index, after the block's residual add).
repeng writes "direction.{layer}" with the 0-based index of the decoder layer
whose output hidden state it read (hidden_states[layer + 1]). Both therefore
mean: direction.N is added to the output of block N, counting blocks from 0,
which is exactly our row N ("output of block l"). Our layer 0 has no GGUF
equivalent: export leaves it out (refusing when it was asked for explicitly).

Alpha. llama.cpp multiplies every direction by the strength at every layer, so
an imported control vector (no class means) keeps that per-layer meaning
(metadata alpha_unit "per_layer"). A vector of ours exported unscaled carries
its own unit as mlx_interp.alpha_unit and gets it back on import.

llama.cpp adds every direction in the file (times the strength), so export
writes only the layers that should be steered: by default the vector's
recommended layers. Our extra facts travel as "mlx_interp.*" keys, which
llama.cpp ignores, so a round trip keeps name, alpha, midpoints and model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError, check_name, file_sha256
from .interventions import AlphaUnit
from .vectors import SteeringVector, build_metadata, parse_layers

ARCH = "controlvector"
TENSOR_PREFIX = "direction."
OUR_PREFIX = "mlx_interp."


def export_gguf(
    vector: SteeringVector,
    path: str | Path,
    model_hint: str | None = None,
    layers=None,
    scale: float = 1.0,
) -> tuple[int, ...]:
    """Write vector as a control vector GGUF; returns the layers written.

    layers: None for the recommended layers, "all" for every layer with a
    direction (layer 0 skipped), or any layer spec. scale multiplies the
    directions (llama.cpp's strength then multiplies again).
    """
    from gguf import GGUFWriter

    if not math.isfinite(scale) or scale == 0:
        raise ValueError(f"scale must be a finite non-zero number, got {scale}")
    if layers is None:
        chosen = vector.recommended_layers
    elif isinstance(layers, str) and layers.strip().lower() == "all":
        chosen = tuple(l for l in range(1, vector.num_layers) if np.any(vector.directions[l]))
    else:
        chosen = parse_layers(layers, vector.num_layers)
    if 0 in chosen:
        raise ValueError(
            f"layer 0 of {vector.name!r} cannot be exported: llama.cpp control vectors start at block 1 "
            "(pass layers without 0)"
        )
    if not chosen:
        raise ValueError(f"{vector.name!r} has no direction to export outside layer 0")
    hint = model_hint or vector.metadata.get("model_id") or "unknown"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    writer = GGUFWriter(str(tmp), ARCH)
    try:
        writer.add_string(f"{ARCH}.model_hint", str(hint))
        writer.add_int32(f"{ARCH}.layer_count", len(chosen))
        meta = vector.metadata
        writer.add_string(OUR_PREFIX + "name", vector.name)
        writer.add_string(OUR_PREFIX + "description", vector.description)
        writer.add_string(OUR_PREFIX + "method", str(meta.get("method", "")))
        writer.add_uint32(OUR_PREFIX + "num_layers", vector.num_layers)
        writer.add_float64(OUR_PREFIX + "default_alpha", vector.default_alpha / scale)
        # scaled directions are no longer class-mean differences: their alpha is llama.cpp's
        unit = vector.alpha_unit if scale == 1.0 else AlphaUnit.PER_LAYER
        writer.add_string(OUR_PREFIX + "alpha_unit", unit.value)
        for key in ("model_id", "model_fingerprint", "dataset_hash"):
            if meta.get(key):
                writer.add_string(OUR_PREFIX + key, str(meta[key]))
        if vector.midpoints is not None:
            # a midpoint is a projection on the unit direction: scaling flips it only with the sign
            writer.add_array(OUR_PREFIX + "midpoints", [float(x) * math.copysign(1.0, scale) for x in vector.midpoints])
        norms = meta.get("layer_norms")
        if isinstance(norms, list) and len(norms) == vector.num_layers:
            writer.add_array(OUR_PREFIX + "layer_norms", [float(x) for x in norms])
        for layer in chosen:
            writer.add_tensor(f"{TENSOR_PREFIX}{layer}", np.ascontiguousarray(vector.directions[layer] * scale, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return tuple(chosen)


# -- import ------------------------------------------------------------------------


def _field_value(field):
    """A GGUF key's value as a Python str / number / list, for any gguf package version."""
    from gguf import GGUFValueType

    kind = field.types[0] if field.types else None
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    if kind == GGUFValueType.ARRAY:
        if len(field.types) > 1 and field.types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i][0].item() for i in field.data]
    return field.parts[field.data[0]][0].item()


def read_control_vector(path: str | Path) -> tuple[dict, dict[int, np.ndarray]]:
    """(key/values, {layer: direction float32}) of a control vector GGUF; ArtifactError if it is not one."""
    from gguf import GGMLQuantizationType, GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"control vector not found: {path}")
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct errors on foreign bytes
        raise ArtifactError(path, f"not a GGUF file ({exc})") from None
    fields = {name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = fields.get("general.architecture")
    if arch != ARCH:
        raise ArtifactError(path, f"not a control vector (general.architecture is {arch!r}, expected {ARCH!r})")
    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        if not tensor.name.startswith(TENSOR_PREFIX):
            continue
        suffix = tensor.name[len(TENSOR_PREFIX) :]
        if not suffix.isdigit():
            raise ArtifactError(path, f"tensor {tensor.name!r} has no layer number")
        layer = int(suffix)
        if layer == 0:
            raise ArtifactError(path, "direction.0 is not a valid layer (control vectors start at block 1)")
        if tensor.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            raise ArtifactError(path, f"{tensor.name} is {tensor.tensor_type.name}; only F32 and F16 directions are supported")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if len([d for d in tensor.shape if d != 1]) > 1:
            raise ArtifactError(path, f"{tensor.name} has shape {list(tensor.shape)}; a direction is one row")
        if not np.all(np.isfinite(data)):
            raise ArtifactError(path, f"{tensor.name} contains NaN or Inf values")
        directions[layer] = data
    if not directions:
        raise ArtifactError(path, "no direction.N tensors")
    widths = {len(v) for v in directions.values()}
    if len(widths) > 1:
        raise ArtifactError(path, f"direction tensors have different widths {sorted(widths)}")
    return fields, directions


def import_gguf(
    path: str | Path,
    name: str,
    lm=None,
    *,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    model_id: str | None = None,
    fingerprint: str | None = None,
    description: str | None = None,
) -> SteeringVector:
    """A SteeringVector from a control vector GGUF.

    Dimensions come from lm (a LoadedModel) when given, else from the
    arguments, else from the file (width of the tensors; layers up to the
    highest direction). The file's layers become the recommended layers.
    """
    path = Path(path)
    check_name(name, path)
    if lm is not None:
        hidden_size, num_layers = lm.hidden_size, lm.num_layers
        model_id, fingerprint = lm.model_id, lm.fingerprint
    fields, by_layer = read_control_vector(path)
    width = len(next(iter(by_layer.values())))
    ours = {k[len(OUR_PREFIX) :]: v for k, v in fields.items() if k.startswith(OUR_PREFIX)}
    if hidden_size is not None and width != hidden_size:
        raise ArtifactError(path, f"directions have width {width} but the model's hidden size is {hidden_size}")
    if num_layers is None:
        num_layers = max(int(ours.get("num_layers", 0)), max(by_layer) + 1)
    out_of_range = sorted(l for l in by_layer if l >= num_layers)
    if out_of_range:
        raise ArtifactError(
            path, f"direction.{out_of_range[0]} is for layer {out_of_range[0]} but the model has layers 0-{num_layers - 1}"
        )
    if fingerprint is not None and ours.get("model_fingerprint") not in (None, fingerprint):
        raise ArtifactError(path, f"model fingerprint {str(ours['model_fingerprint'])[:12]} does not match the loaded model's {fingerprint[:12]}")
    directions = np.zeros((num_layers, width), dtype=np.float32)
    for layer, row in by_layer.items():
        directions[layer] = row
    present = tuple(sorted(l for l in by_layer if np.any(by_layer[l])))
    if not present:
        raise ArtifactError(path, "every direction is all zero")
    midpoints = None
    if isinstance(ours.get("midpoints"), list) and len(ours["midpoints"]) == num_layers:
        midpoints = np.asarray(ours["midpoints"], dtype=np.float32)
        if not np.all(np.isfinite(midpoints)):
            raise ArtifactError(path, "mlx_interp.midpoints contains NaN or Inf values")
    layer_norms = None
    if isinstance(ours.get("layer_norms"), list) and len(ours["layer_norms"]) == num_layers:
        layer_norms = [float(x) for x in ours["layer_norms"]]
        if not all(math.isfinite(x) and x >= 0 for x in layer_norms):
            raise ArtifactError(path, "mlx_interp.layer_norms must be finite non-negative numbers")
    unit = ours.get("alpha_unit", AlphaUnit.PER_LAYER.value)
    if unit not in {u.value for u in AlphaUnit}:
        raise ArtifactError(path, f"mlx_interp.alpha_unit {unit!r} is not one of {', '.join(u.value for u in AlphaUnit)}")
    alpha = ours.get("default_alpha", 1.0)
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ArtifactError(path, f"mlx_interp.default_alpha {alpha!r} is not a finite number")
    metadata = build_metadata(
        name,
        hidden_size=width,
        num_layers=num_layers,
        method=str(ours.get("method") or "gguf_import"),
        recommended_layers=present,
        layer_norms=layer_norms,
        default_alpha=float(alpha),
        model_id=model_id or ours.get("model_id") or fields.get(f"{ARCH}.model_hint"),
        model_fingerprint=fingerprint or ours.get("model_fingerprint"),
        description=description if description is not None else str(ours.get("description") or f"imported from {path.name}"),
        dataset_hash=ours.get("dataset_hash"),
        alpha_unit=unit,
        extra={
            "imported_from": path.name,
            "gguf_sha256": file_sha256(path),
            "model_hint": fields.get(f"{ARCH}.model_hint"),
        },
    )
    return SteeringVector(name=name, directions=directions, metadata=metadata, midpoints=midpoints)
