"""Subcommands of the core library: `vectors …`, `capture`, `generate`.

Handlers import mlx and the model code only when they run, so `--help` is fast.
Problems the user can fix raise ValueError / FileNotFoundError with one line;
the dispatcher in mlx_interp/cli.py prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlx_interp import paths

# Vectors shipped with the package (read-only). Built and imported vectors go to the
# user's library (paths.user_vectors()); names are looked up there first, then here.
SHIPPED_LIBRARY = paths.SHIPPED_VECTORS
DEFAULT_MAX_TOKENS = 64
# What the default model answered, greedy, library path (bench/colour_steer_check.py, docs/steering.md).
STEER_EXAMPLE = """\
example (default model, temperature 0):
  mlx-interp generate --prompt "What colour is fresh grass? Answer with one word." --steer green_red=1.25 --max-tokens 8
    unsteered: The colour of fresh grass is a mix
    steered:   The answer is: red.
  (1.25 is green_red's calibrated default; the design card's 1.5 gives "The answer will be: \u201cRed\u201d")

alpha (add) is the total shift across the steered layers in units of the vector's class-mean
difference: 1 moves a typical green state as far as a typical red one, whatever the layers.
For reflect and ablate it is a fraction of the component (1 = mirror / remove it once).
See docs/steering.md."""


def register(subparsers) -> None:
    _register_vectors(subparsers)
    _register_capture(subparsers)
    _register_generate(subparsers)


# -- vectors ----------------------------------------------------------------------------


def _register_vectors(subparsers) -> None:
    vectors = subparsers.add_parser("vectors", help="build, list, show, import and export steering vectors", description="Steering vectors: NAME.safetensors + NAME.json.")
    vsub = vectors.add_subparsers(dest="vectors_command", metavar="ACTION")
    vectors.set_defaults(func=lambda args: (vectors.print_help(), 0)[1])

    build = vsub.add_parser("build", help="build a vector from contrastive pairs (JSONL)", description="Capture contrastive prompt pairs and save the direction from negative to positive.")
    build.add_argument("--pairs", required=True, help='JSONL file, one {"positive": ..., "negative": ...} per line')
    build.add_argument("--name", required=True, help="vector name ([A-Za-z0-9_.-], up to 64 characters)")
    build.add_argument("--model", default="default", help="model: 'default', an mlx-lm directory, a repo id or a .gguf (default: default)")
    build.add_argument("--method", choices=("mean_diff", "pca"), default="mean_diff", help="how to combine the paired differences (default: mean_diff)")
    build.add_argument("--position", choices=("last", "mean"), default="last", help="which token's state to use (default: last)")
    build.add_argument("--no-chat", action="store_true", help="feed the texts raw instead of as chat user turns")
    build.add_argument("--out", default=None, help="directory to write NAME.json and NAME.safetensors into (default: the user's library, $MLX_INTERP_HOME/library/vectors, which `generate` and `serve` read)")
    build.add_argument("--description", default="", help="one line saying what the vector does")
    build.set_defaults(func=_vectors_build)

    lst = vsub.add_parser("list", help="list the vectors in a directory", description="List the vectors in DIR (default: the user's library, $MLX_INTERP_HOME/library/vectors, and the one shipped with the package).")
    lst.add_argument("directory", nargs="?", default=None, metavar="DIR")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=_vectors_list)

    show = vsub.add_parser("show", help="print a vector's metadata", description="Print a vector's metadata and identity as JSON.")
    show.add_argument("path", metavar="PATH", help="NAME.json, NAME.safetensors, their stem, or the name of a shipped vector")
    show.set_defaults(func=_vectors_show)

    imp = vsub.add_parser("import-gguf", help="import a llama.cpp / repeng control vector", description="Convert a llama.cpp / repeng control vector GGUF into a steering vector.")
    imp.add_argument("file", metavar="FILE", help="control vector .gguf")
    imp.add_argument("--name", required=True, help="name for the imported vector")
    imp.add_argument("--model", default=None, help="check the vector against this model and record it (optional)")
    imp.add_argument("--out", default=None, help="directory to write into (default: the user's library, $MLX_INTERP_HOME/library/vectors)")
    imp.add_argument("--description", default=None)
    imp.set_defaults(func=_vectors_import)

    exp = vsub.add_parser("export-gguf", help="export a vector as a llama.cpp control vector", description="Write a vector as a llama.cpp control vector GGUF (direction.N = output of block N).")
    exp.add_argument("path", metavar="PATH", help="the vector (NAME.json or its stem)")
    exp.add_argument("out", metavar="OUT.gguf")
    exp.add_argument("--layers", default=None, help="layers to write: '8-16', 'all' (default: the recommended layers)")
    exp.add_argument("--model-hint", default=None, help="controlvector.model_hint (default: the vector's model id)")
    exp.add_argument("--scale", type=float, default=1.0, help="multiply the directions by this (default: 1)")
    exp.set_defaults(func=_vectors_export)

    cal = vsub.add_parser(
        "calibrate",
        help="sweep alpha and store the coherent range and a recommended alpha",
        description=(
            "Steer greedy generations at each alpha of a sweep (add, the vector's unit), score the steered text "
            "under the unsteered model (mean token log-probability) and the next-token KL, and store the coherent "
            "range, the recommended alpha and calibrated: true in the vector's metadata (default_alpha becomes the "
            "recommendation). Example: mlx-interp vectors calibrate green_red"
        ),
    )
    cal.add_argument("path", metavar="NAME", help="a shipped vector's name, NAME.json or its stem (rewritten in place)")
    cal.add_argument("--model", default="default", help="model the vector was built for (default: default)")
    cal.add_argument("--alphas", default=None, help="comma-separated alphas to sweep (default: -3,-2,-1.5,-1,1,1.5,2,3)")
    cal.add_argument("--prompts", default=None, help="prompts to generate from: .txt (one per line) or .jsonl (default: two neutral prompts)")
    cal.add_argument("--layers", default=None, help="layers to steer (default: the vector's recommended layers)")
    cal.add_argument("--max-tokens", type=int, default=None, help="tokens generated per prompt and alpha (default: 12)")
    cal.add_argument("--min-logprob", type=float, default=None, help="coherent while the steered text scores at least this many nats/token under the unsteered model (default: -3.5) ...")
    cal.add_argument("--max-drop", type=float, default=None, help="... or costs at most this many nats/token more than the unsteered text (default: 2.5)")
    cal.add_argument("--dry-run", action="store_true", help="print the sweep without rewriting the vector")
    cal.set_defaults(func=_vectors_calibrate)


def _load_model(spec: str):
    from .model import load_model

    print(f"loading model {spec} ...", file=sys.stderr)
    return load_model(spec)


def _vectors_build(args) -> int:
    from .artifacts import check_name
    from .extraction import build_vector, read_pairs

    check_name(args.name)
    pairs = read_pairs(args.pairs)
    lm = _load_model(args.model)
    vector = build_vector(
        lm,
        pairs,
        args.name,
        method=args.method,
        position=args.position,
        chat=not args.no_chat,
        description=args.description,
        progress=True,
        dataset_paths=[args.pairs],
    )
    path = vector.save(args.out or paths.user_vectors())
    extra = vector.metadata.get("extra", {})
    best = max(vector.recommended_layers, key=lambda l: extra["separation"][l])
    print(
        f"wrote {path} ({len(pairs)} pairs, method {args.method}); recommended layers "
        f"{_layer_range(vector.recommended_layers)}, default alpha {vector.default_alpha:g}, "
        f"best layer {best}: held-out accuracy {extra['heldout_sign_accuracy'][best]:.2f}, separation {extra['separation'][best]:.2f}"
    )
    return 0


def _layer_range(layers) -> str:
    layers = list(layers)
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(l) for l in layers)


def _vectors_list(args) -> int:
    from .vectors import VectorLibrary

    directories = [Path(args.directory)] if args.directory else default_vector_dirs()
    if args.directory and not directories[0].is_dir():
        raise FileNotFoundError(f"vector directory not found: {directories[0]}")
    found: dict[str, dict] = {}
    for directory in directories:  # the first holding a name wins, as in `generate` and `serve`
        library = VectorLibrary(directory)
        for err in library.load_all():
            print(f"skipped {err}", file=sys.stderr)
        for d in library.describe():
            found.setdefault(d["name"], d)
    described = [found[n] for n in sorted(found)]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    if not described:
        print(f"no vectors in {' or '.join(str(d) for d in directories)}")
        return 0
    rows = [("NAME", "LAYERS", "ALPHA", "METHOD", "MODEL", "DESCRIPTION")]
    for d in described:
        rows.append((d["name"], _layer_range(d["recommended_layers"]), f"{d['default_alpha']:g}", d["method"], str(d["model_id"]), d["description"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def default_vector_dirs() -> list[Path]:
    """Where a vector name is looked up when no directory is given: the user's library, then the shipped one."""
    return [paths.user_vectors(), SHIPPED_LIBRARY]


def _resolve_vector_path(spec: str) -> Path:
    """A vector path as given, or the name of a vector in the user's or the shipped library."""
    from .vectors import vector_paths

    json_path, _ = vector_paths(spec)
    if json_path.exists():
        return json_path
    if "/" not in spec:
        for directory in default_vector_dirs():
            found, _ = vector_paths(directory / spec)
            if found.exists():
                return found
    raise FileNotFoundError(f"vector not found: {json_path}")


def _vectors_show(args) -> int:
    from .vectors import SteeringVector

    vector = SteeringVector.load(_resolve_vector_path(args.path))
    print(json.dumps(vector.describe(), indent=2))
    return 0


def _vectors_import(args) -> int:
    from .control_gguf import import_gguf

    lm = _load_model(args.model) if args.model else None
    vector = import_gguf(args.file, args.name, lm, description=args.description)
    path = vector.save(args.out or paths.user_vectors())
    print(f"wrote {path} (layers {_layer_range(vector.recommended_layers)}, hidden {vector.hidden_size}, {vector.num_layers} layers)")
    return 0


def _vectors_export(args) -> int:
    from .control_gguf import export_gguf
    from .vectors import SteeringVector

    vector = SteeringVector.load(_resolve_vector_path(args.path))
    layers = export_gguf(vector, args.out, model_hint=args.model_hint, layers=args.layers, scale=args.scale)
    print(f"wrote {args.out} (direction.N for layers {_layer_range(layers)})")
    return 0


def _vectors_calibrate(args) -> int:
    from . import calibration
    from .vectors import SteeringVector

    path = _resolve_vector_path(args.path)
    vector = SteeringVector.load(path)
    alphas = calibration.DEFAULT_ALPHAS
    if args.alphas:
        try:
            alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
        except ValueError:
            raise ValueError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from None
    prompts = read_texts(args.prompts) if args.prompts else calibration.CALIBRATION_PROMPTS
    max_tokens = args.max_tokens if args.max_tokens is not None else calibration.DEFAULT_MAX_TOKENS
    if max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {max_tokens}")
    lm = _load_model(args.model)
    SteeringVector.load(path, fingerprint=lm.fingerprint, hidden_size=lm.hidden_size, num_layers=lm.num_layers)
    result = calibration.calibrate(
        lm,
        vector,
        alphas=alphas,
        prompts=prompts,
        max_tokens=max_tokens,
        layers=args.layers,
        max_logprob_drop=args.max_drop if args.max_drop is not None else calibration.MAX_LOGPROB_DROP,
        coherent_logprob=args.min_logprob if args.min_logprob is not None else calibration.COHERENT_LOGPROB,
    )
    print(f"baseline (unsteered) {result.baseline_logprob_per_token:.2f} nats/token")
    for p in result.sweep:
        mark = "coherent" if p.coherent else "broken"
        print(f"alpha {p.alpha:+g}: {p.logprob_per_token:.2f} nats/token (drop {p.logprob_drop:.2f}), KL {p.kl_first_token:.2f}, {mark}: {p.sample!r}")
    low, high = result.coherent_range
    print(f"coherent range [{low:g}, {high:g}], recommended alpha {result.recommended_alpha:g}")
    if args.dry_run:
        return 0
    calibrated = calibration.apply_calibration(vector, result, lm.fingerprint)
    written = calibrated.save(path.parent)
    print(f"wrote {written}")
    return 0


# -- capture ------------------------------------------------------------------------------


def _register_capture(subparsers) -> None:
    cap = subparsers.add_parser("capture", help="save the residual stream of texts to .npy", description="Run texts through the model and save every chosen layer's residual stream.")
    cap.add_argument("--model", default="default", help="model (default: default)")
    cap.add_argument("--text", action="append", default=[], help="a text to capture (repeatable)")
    cap.add_argument("--file", default=None, help='more texts: .txt (one per line) or .jsonl (strings or {"text": ...})')
    cap.add_argument("--position", choices=("last", "all", "mean"), default="last", help="last token, every token, or the mean over tokens (default: last)")
    cap.add_argument("--layers", default=None, help="layers to keep, e.g. '8-16' (default: all)")
    cap.add_argument("--chat", action="store_true", help="wrap each text as a chat user turn")
    cap.add_argument("--out", required=True, help="FILE.npy: (texts, layers, hidden); with --position all, (texts, layers, tokens, hidden) when lengths agree, else use FILE.npz")
    cap.set_defaults(func=_capture)


def read_texts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() != ".jsonl":
        return [line for line in lines if line.strip()]
    texts = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from None
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text:
            raise ValueError(f"{path}:{lineno}: expected a string or an object with a non-empty 'text'")
        texts.append(text)
    return texts


def _capture(args) -> int:
    import numpy as np

    from .capture import capture_hidden_states
    from .vectors import parse_layers

    texts = list(args.text) + (read_texts(args.file) if args.file else [])
    if not texts:
        raise ValueError("nothing to capture: give --text or --file")
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"--out must end in .npy or .npz, got {out.name}")
    lm = _load_model(args.model)
    layers = parse_layers(args.layers, lm.num_layers) if args.layers else None
    states = capture_hidden_states(lm, texts, position=args.position, layers=layers, chat=args.chat, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        arrays = states if isinstance(states, list) else list(states)
        np.savez(out, **{f"text_{i}": a for i, a in enumerate(arrays)})
        shape = f"{len(arrays)} arrays"
    else:
        if isinstance(states, list):
            if len({a.shape for a in states}) > 1:
                raise ValueError("texts have different token counts, so --position all cannot be one .npy; use --out FILE.npz")
            states = np.stack(states)
        np.save(out, states)
        shape = str(states.shape)
    print(f"wrote {out} {shape} (layers {_layer_range(layers) if layers else f'0-{lm.num_layers - 1}'})")
    return 0


# -- generate -------------------------------------------------------------------------------


def _register_generate(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate",
        help="generate text, optionally steered",
        description="Generate from a prompt with steering vectors applied.",
        epilog=STEER_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--model", default="default", help="model (default: default)")
    gen.add_argument("--prompt", action="append", required=True, help="prompt (repeatable: several prompts run as one batch)")
    gen.add_argument("--steer", action="append", default=[], metavar="NAME=ALPHA", help="apply vector NAME with strength ALPHA (repeatable; NAME alone uses its default alpha)")
    gen.add_argument("--op", choices=("add", "reflect", "ablate", "clamp"), default="add", help="operation for every --steer (default: add)")
    gen.add_argument("--value", type=float, default=None, help="projection to set with --op clamp")
    gen.add_argument("--layers", default=None, help="layers to steer, e.g. '8-16' or 'all' (default: each vector's recommended layers)")
    gen.add_argument("--scope", choices=("all", "prompt", "generation"), default="all", help="steer the prompt, the generation or both (default: all)")
    gen.add_argument("--vectors", default=None, metavar="DIR", help="vector directory (default: the user's library, then the one shipped with the package)")
    gen.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"tokens to generate (default: {DEFAULT_MAX_TOKENS})")
    gen.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default: 0)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--no-chat", action="store_true", help="send the prompt raw instead of as a chat user turn")
    gen.set_defaults(func=_generate)


def parse_steer(spec: str) -> tuple[str, float | None]:
    """'NAME=ALPHA' -> (NAME, ALPHA); 'NAME' -> (NAME, None)."""
    name, sep, alpha = spec.partition("=")
    name = name.strip()
    if not name:
        raise ValueError(f"--steer {spec!r}: expected NAME=ALPHA")
    if not sep:
        return name, None
    try:
        value = float(alpha)
    except ValueError:
        raise ValueError(f"--steer {spec!r}: alpha {alpha.strip()!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"--steer {spec!r}: alpha must be finite")
    return name, value


def _generate(args) -> int:
    from .generation import generate
    from .vectors import VectorLibrary

    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    steers = [parse_steer(s) for s in args.steer]
    directories = [Path(args.vectors)] if args.vectors else default_vector_dirs()
    if args.vectors and not directories[0].is_dir():
        raise FileNotFoundError(f"vector directory not found: {directories[0]}")
    lm = _load_model(args.model)
    interventions = []
    if steers:
        libraries = []
        for directory in directories:
            library = VectorLibrary(directory, fingerprint=lm.fingerprint, hidden_size=lm.hidden_size, num_layers=lm.num_layers)
            for err in library.load_all():
                print(f"skipped {err}", file=sys.stderr)
            libraries.append(library)
        for name, alpha in steers:
            holder = next((lib for lib in libraries if name in lib), None)
            if holder is None:
                available = ", ".join(sorted({n for lib in libraries for n in lib.names()})) or "none"
                where = " or ".join(str(d) for d in directories)
                raise ValueError(f"unknown vector {name!r} in {where} (available for this model: {available})")
            interventions.append(holder.get(name).intervention(alpha, op=args.op, layers=args.layers, scope=args.scope, value=args.value))
    results = generate(
        lm,
        args.prompt,
        [interventions] * len(args.prompt),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        chat=not args.no_chat,
        seed=args.seed,
    )
    for i, result in enumerate(results):
        if len(results) > 1:
            print(f"--- [{i}] {args.prompt[i]!r} ({result.finish_reason})")
        print(result.text)
    for iv in interventions:
        print(f"steered: {iv.name} alpha={iv.alpha:g} op={iv.op.value} layers={_layer_range(iv.layers)} scope={iv.scope.value} sha256={iv.key[:12]}", file=sys.stderr)
    return 0
