"""`mlx-interp probes train | list | show | score`."""

from __future__ import annotations

from pathlib import Path

from mlx_interp import paths

from .aggregation import AGGREGATIONS, DEFAULT_EMA_WINDOW
from .positions import POSITIONS

RECIPE_NAMES = ("sycophancy", "concession")  # probes.recipes.RECIPES, named here so --help needs no import
LIBRARY_DIR = paths.SHIPPED_PROBES  # probes shipped with the package (read-only); trained ones go to paths.user_probes()
SHOWN_FIELDS = (
    "labels", "method", "best_layer", "aggregation", "threshold", "threshold_fpr", "threshold_fpr_achieved",
    "threshold_tpr", "position", "model_id", "model_fingerprint", "hidden_size", "num_layers", "n_examples",
    "n_groups", "folds", "dataset_hash", "created",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "probes",
        help="train, inspect and run linear probes",
        description="Train linear probes on a model's residual stream (grouped CV, baselines, CIs), inspect them, score text.",
    )
    sub = parser.add_subparsers(dest="probes_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    train = sub.add_parser("train", help="train a probe from a labelled JSONL file")
    train.add_argument("--data", required=True, help="JSONL rows with 'text' (or 'messages'), 'label', optional 'group'")
    train.add_argument("--name", required=True, help="probe name ([A-Za-z0-9_.-], 1-64 characters)")
    train.add_argument("--model", default="default", help="model: 'default', an mlx-lm directory, a repo id or a .gguf")
    train.add_argument("--method", choices=("logistic", "diff_means"), default="logistic")
    train.add_argument("--folds", type=int, default=5, help="cross-validation folds (grouped, stratified)")
    train.add_argument("--fpr", type=float, default=0.05, help="false-positive rate the threshold is set at")
    train.add_argument("--positive-label", default=None, help="which of two string labels is the positive class")
    train.add_argument(
        "--position", choices=POSITIONS, default="answer_end",
        help="where the probe reads, in training and when served: prompt_last (last prompt token), "
        "token (every answer token), answer_end (last answer token)",
    )
    train.add_argument("--layers", default=None, help="candidate layers, declared before looking, e.g. 8-20 (default: all)")
    train.add_argument("--aggregation", choices=AGGREGATIONS, default="mean", help="response aggregate of a token probe")
    train.add_argument("--ema-window", type=int, default=DEFAULT_EMA_WINDOW, help="window of the ema aggregate")
    train.add_argument("--chat", action="store_true", help="wrap 'text' rows as a user turn in the chat template")
    train.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength of the logistic regression")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--description", default="")
    train.add_argument("--out", default=None, help="folder to save into (default: the user's library, $MLX_INTERP_HOME/library/probes)")
    train.set_defaults(func=cmd_train)

    build = sub.add_parser(
        "build",
        help="build a named probe (sycophancy, concession) for a model from the shipped dataset",
        description="Build a named probe from its shipped dataset with everything fixed in advance (position, layer "
        "band, aggregate, regularisation): e.g. `mlx-interp probes build sycophancy --model "
        "mlx-community/Qwen2.5-7B-Instruct-4bit`. The result goes to --out (your data directory by default).",
    )
    build.add_argument("name", choices=sorted(RECIPE_NAMES), help="which probe")
    build.add_argument("--model", default="default", help="'default', an mlx-lm directory, a repo id or a .gguf")
    build.add_argument("--out", default=None, help="folder to save into (default: the user's library, $MLX_INTERP_HOME/library/probes)")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=cmd_build)

    lst = sub.add_parser("list", help="list the probes of a folder")
    lst.add_argument("dir", nargs="?", default=None, help="probe folder (default: the user's library, $MLX_INTERP_HOME/library/probes, and the shipped one)")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="show a probe's metadata and per-layer quality")
    show.add_argument("path", help="NAME.json, NAME.safetensors, or the name of a shipped probe")
    show.set_defaults(func=cmd_show)

    score = sub.add_parser("score", help="score a text with a probe at every layer")
    score.add_argument("--probe", required=True, help="NAME.json / NAME.safetensors, or the name of a shipped probe")
    score.add_argument("--text", required=True)
    score.add_argument("--model", default="default")
    score.add_argument("--chat", action="store_true", help="wrap the text as a user turn in the chat template")
    score.set_defaults(func=cmd_score)


def resolve_probe_path(spec: str) -> Path:
    """A probe file, or the name of one in the shipped library."""
    path = Path(spec).expanduser()
    from .probe import artifact_paths

    json_path, _ = artifact_paths(path)
    if json_path.exists():
        return json_path
    if path.parent == Path("."):  # a bare name: the user's library first, then the shipped one
        for library in (paths.user_probes(), LIBRARY_DIR):
            if (library / f"{spec}.json").exists():
                return library / f"{spec}.json"
    raise FileNotFoundError(f"probe not found: {spec} (no {json_path}, and no shipped probe of that name)")


def cmd_train(args) -> int:
    from mlx_interp.steering.artifacts import check_name
    from mlx_interp.steering.model import load_model

    from .training import train_probe_from_jsonl

    check_name(args.name)
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"labelled data file not found: {args.data}")
    lm = load_model(args.model)
    probe = train_probe_from_jsonl(
        lm,
        args.data,
        args.name,
        positive_label=args.positive_label,
        position=args.position,
        layers=parse_layer_band(args.layers),
        layer_band_declared=args.layers is not None,
        aggregation=args.aggregation,
        ema_window=args.ema_window,
        chat=args.chat,
        method=args.method,
        folds=args.folds,
        fpr=args.fpr,
        C=args.C,
        seed=args.seed,
        description=args.description,
        progress=True,
    )
    print(format_table(probe))
    meta = probe.metadata
    print(
        f"best layer {probe.best_layer}; threshold {probe.threshold:.4f} at FPR {meta['threshold_fpr']:.3f} "
        f"(achieved {meta['threshold_fpr_achieved']:.3f}, TPR {meta['threshold_tpr']:.3f}); "
        f"labels {probe.labels[0]!r} (0) / {probe.labels[1]!r} (1)"
    )
    path = probe.save(args.out or paths.user_probes())
    print(f"saved {path}")
    return 0


def cmd_build(args) -> int:
    from mlx_interp.steering.model import load_model

    from .recipes import build

    lm = load_model(args.model)
    probe = build(args.name, lm, progress=True, seed=args.seed)
    meta = probe.metadata
    print(format_table(probe))
    ci = meta.get("auroc_ci") or [None, None]
    ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else "-"
    print(
        f"{probe.name} for {lm.model_id}: position {probe.position}, best layer {probe.best_layer}; "
        f"held-out AUROC (nested CV) {meta['auroc']:.3f} {ci_text}; threshold {probe.threshold:.4f} at FPR "
        f"{meta['threshold_fpr']:.3f}"
    )
    path = probe.save(Path(args.out) if args.out else paths.user_probes())
    print(f"saved {path}  (serve it: mlx-interp serve --model {args.model} --probes {path.parent})")
    return 0


def parse_layer_band(text: str | None) -> list[int] | None:
    """"8-20" or "8,10,12" -> layer indices; None stays None (every layer)."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"--layers range {part!r} runs backwards")
            out.extend(range(lo, hi + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise ValueError(f"--layers {text!r} names no layer")
    return sorted(set(out))


def cmd_list(args) -> int:
    from .probe import ProbeLibrary

    if args.dir is not None:
        roots = [Path(args.dir)]
        if not roots[0].exists():
            raise FileNotFoundError(f"probe folder not found: {roots[0]}")
    else:  # as `serve` and `score` look names up: the user's library first, then the shipped one
        roots = [r for r in (paths.user_probes(), LIBRARY_DIR) if r.exists()]
    found: dict[str, dict] = {}
    errors = []
    for root in roots:
        library = ProbeLibrary(root)
        errors.extend(library.load_all())
        for r in library.describe():
            found.setdefault(r["name"], r)
    rows = [found[n] for n in sorted(found)]
    if not rows and not errors:
        print(f"no probes in {' or '.join(str(r) for r in roots) or LIBRARY_DIR}")
    if rows:
        print(f"{'name':24} {'method':10} {'labels':28} {'best':>4} {'AUROC':>6} {'thresh':>7}  model")
        for r in rows:
            auc = f"{r['auroc']:.3f}" if isinstance(r["auroc"], float) else "-"
            labels = "/".join(r["labels"])
            print(
                f"{r['name']:24} {r['method']:10} {labels[:28]:28} {r['best_layer']:>4} {auc:>6} "
                f"{r['threshold']:>7.3f}  {r['model_id'] or '-'}"
            )
    for err in errors:
        print(f"refused {err}")
    return 0


def cmd_show(args) -> int:
    from .probe import Probe

    probe = Probe.load(resolve_probe_path(args.path))
    meta = probe.metadata
    print(f"{probe.name}: {meta.get('description') or '(no description)'}")
    for key in SHOWN_FIELDS:
        if key in meta:
            print(f"  {key:18} {meta[key]}")
    print(f"  {'sha256':18} {probe.sha256}")
    print(format_table(probe))
    return 0


def cmd_score(args) -> int:
    import numpy as np

    from mlx_interp.steering.capture import capture_hidden_states, encode
    from mlx_interp.steering.model import load_model

    from .probe import Probe

    path = resolve_probe_path(args.probe)
    lm = load_model(args.model)
    probe = Probe.load(path, fingerprint=lm.fingerprint, hidden_size=lm.hidden_size, num_layers=lm.num_layers)
    tokens = encode(lm, args.text, chat=args.chat)
    if not tokens:
        raise ValueError("--text is empty")
    states = capture_hidden_states(lm, [tokens], position="all")[0]  # (L, T, D)
    per_token = probe.score_numpy(np.transpose(states, (1, 0, 2)))  # (T, K)
    aggregate = aggregate_scores(per_token, probe.aggregation)
    print(f"{probe.name}: {len(tokens)} tokens; P({probe.labels[1]}) per layer ({probe.aggregation} over tokens)")
    print(f"{'layer':>5} {'last':>7} {probe.aggregation:>7}")
    for k, layer in enumerate(probe.layers):
        mark = "  <- best" if layer == probe.best_layer else ""
        print(f"{layer:>5} {per_token[-1, k]:>7.4f} {aggregate[k]:>7.4f}{mark}")
    k_best = probe.layers.index(probe.best_layer)
    score = float(aggregate[k_best])
    flagged = score >= probe.threshold
    print(f"score {score:.4f} at layer {probe.best_layer}; threshold {probe.threshold:.4f}; flagged: {str(flagged).lower()}")
    return 0


def aggregate_scores(per_token, how: str):
    """(T, K) per-token scores -> (K,) by the probe's aggregation."""
    if how == "max":
        return per_token.max(axis=0)
    if how == "last":
        return per_token[-1]
    return per_token.mean(axis=0)


def format_table(probe) -> str:
    """Per-layer CV quality next to its shuffled-label baseline and bootstrap intervals."""

    def f(x, spec=".3f"):
        return format(x, spec) if isinstance(x, (int, float)) else "-"

    def ci(pair):
        return f"[{f(pair[0])}, {f(pair[1])}]" if pair and pair[0] is not None else "-"

    lines = [f"{'layer':>5} {'acc':>6} {'±':>5} {'AUROC':>6} {'±':>5} {'AUROC 95% CI':>16} {'shuf acc':>8} {'shuf AUROC':>10}"]
    for e in probe.metadata.get("per_layer") or []:
        mark = " *" if e["layer"] == probe.best_layer else ""
        lines.append(
            f"{e['layer']:>5} {f(e.get('accuracy_mean')):>6} {f(e.get('accuracy_std')):>5} "
            f"{f(e.get('auroc_mean')):>6} {f(e.get('auroc_std')):>5} {ci(e.get('auroc_ci')):>16} "
            f"{f(e.get('shuffled_accuracy_mean')):>8} {f(e.get('shuffled_auroc_mean')):>10}{mark}"
        )
    return "\n".join(lines)
