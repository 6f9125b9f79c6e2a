"""Named probe builds from the shipped datasets: `mlx-interp probes build NAME --model M`.

A recipe fixes everything decided before looking at results: the dataset and
its labels, the read position, the aggregate, a layer band (a fraction of the
model's depth, so it transfers across model sizes) and the regularisation.
The layer inside the band is then picked by nested CV, thresholds are set on
held-out negatives, and the held-out AUROC with its interval goes into the
probe's metadata.

`sycophancy` first asks the model which of the dataset's facts it knows (the
right answer more probable than the wrong one, experiments.sycophancy_knowledge)
and trains on those items only: agreeing with a wrong claim is sycophancy only
if the model knows the claim is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Recipe:
    name: str
    data: str  # file in probes/data
    position: str
    field: str  # the row field that decides the class
    negative: str  # its value (as text) for class 0
    positive: str  # its value (as text) for class 1
    labels: tuple[str, str]  # [negative, positive] names in the probe
    description: str
    band: tuple[float, float] = (0.15, 0.9)  # fraction of depth, both ends included
    band_step: int = 3
    aggregation: str = "mean"
    ema_window: int = 8
    method: str = "logistic"
    C: float = 1.0
    fpr: float = 0.05
    known_items_only: bool = False

    def layers(self, num_layers: int) -> list[int]:
        lo, hi = (int(round(f * num_layers)) for f in self.band)
        return list(range(lo, min(hi, num_layers - 1) + 1, self.band_step))


RECIPES = {
    "sycophancy": Recipe(
        name="sycophancy",
        data="sycophancy.jsonl",
        position="prompt_last",
        field="condition",
        negative="GA",
        positive="SyA",
        labels=("GA", "SyA"),
        description="Sycophantic agreement ahead: the user asserted a wrong answer to a fact the model knows (SyA) vs "
        "the right one (GA), read at the last prompt token, before the model answers. Trained on the items the model "
        "knows. On the 135M default model this is near chance: see its held-out AUROC; build it for a bigger model.",
        known_items_only=True,
    ),
    "concession": Recipe(
        name="concession",
        data="concession.jsonl",
        position="token",
        field="label",
        negative="0",
        positive="1",
        labels=("holds", "concedes"),
        description="The answer gives way to a user who pushed back: it apologises and adopts the user's (wrong) answer "
        "(1) vs holds its answer or answers an everyday question plainly (0). Read at every answer token; the response "
        "score is the ema of the token readings.",
        aggregation="ema",
        # difference of class means: no per-layer optimisation to overfit the template wording, and
        # mass-mean directions transfer to other text better than logistic ones (Marks & Tegmark 2023)
        method="diff_means",
    ),
}


def _rows(recipe: Recipe) -> list[dict]:
    with (DATA_DIR / recipe.data).open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    wanted = {recipe.negative: 0, recipe.positive: 1}
    out = []
    for r in rows:
        value = str(r[recipe.field])
        if value in wanted:
            out.append({**r, "y": wanted[value]})
    return out


def recipe_rows(name: str, known_groups: set | None = None) -> list[dict]:
    """The rows a recipe trains on (restricted to known items when the recipe asks for that and they are given)."""
    rows = _rows(RECIPES[name])
    return rows if known_groups is None else [r for r in rows if r["group"] in known_groups]


def build(name: str, lm, progress: bool = False, seed: int = 0, knowledge_check: list[dict] | None = None,
          captured: tuple | None = None) -> "Probe":  # noqa: F821
    """Build the named probe for lm from its shipped dataset.

    knowledge_check: the result of experiments.sycophancy_knowledge.knowledge(lm, items()) when it was
    just computed for this same model (it costs two forward passes per item); computed here otherwise.
    captured: (X, owner) of capture_at(lm, spans of recipe_rows(...), recipe.position) when already
    captured for the same rows (a study reading several positions in one pass).
    """
    from mlx_interp.steering.artifacts import dataset_hash

    from .positions import TOKEN, capture_at, example_spans
    from .training import train_probe

    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    rows = _rows(recipe)
    extra: dict = {}
    if recipe.known_items_only:
        from mlx_interp.experiments.sycophancy_knowledge import items, knowledge

        know = knowledge_check if knowledge_check is not None else knowledge(lm, items())
        known = {k["group"] for k in know if k["known"]}
        rows = [r for r in rows if r["group"] in known]
        extra = {"known_items": len(known), "items_checked": len(know)}
        if len({r["group"] for r in rows}) < 5:
            raise ValueError(f"{lm.model_id} knows only {len(known)} of {len(know)} items: too few to train {name}")
    if captured is None:
        captured = capture_at(lm, [example_spans(lm, r) for r in rows], recipe.position, progress=progress)
    X, owner = captured
    y = np.array([r["y"] for r in rows])
    probe = train_probe(
        X,
        y[owner],
        [rows[i]["group"] for i in owner],
        recipe.name,
        layers=recipe.layers(lm.num_layers),
        layer_band_declared=True,
        labels=recipe.labels,
        model=lm,
        dataset_hash=dataset_hash([DATA_DIR / recipe.data]),
        progress=progress,
        description=recipe.description,
        aggregation=recipe.aggregation,
        ema_window=recipe.ema_window,
        position=recipe.position,
        sequences=owner.tolist() if recipe.position == TOKEN else None,
        method=recipe.method,
        C=recipe.C,
        fpr=recipe.fpr,
        seed=seed,
    )
    probe.metadata.update(extra)
    probe.metadata["recipe"] = recipe.name
    return probe
