"""The shipped datasets: counts, balance, ids, groups, and that the generator reproduces them."""

import json
from collections import Counter

import pytest

from mlx_interp.experiments import make_datasets
from mlx_interp.experiments.common import (COLOUR_CONTROLS, COLOUR_QUESTIONS, CONFOUND, CONTAMINATION, GREEN_RED_PAIRS,
                                SYCOPHANCY, read_jsonl)


@pytest.mark.parametrize("path, make", list(make_datasets.DATASETS.items()), ids=lambda x: getattr(x, "name", ""))
def test_generator_reproduces_committed_file(path, make):
    expected = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in make())
    assert path.read_text(encoding="utf-8") == expected, f"{path.name} is stale: run python -m experiments.make_datasets"


@pytest.mark.parametrize("path", [COLOUR_QUESTIONS, COLOUR_CONTROLS, CONTAMINATION, SYCOPHANCY, CONFOUND])
def test_ids_unique(path):
    ids = [r["id"] for r in read_jsonl(path)]
    assert len(ids) == len(set(ids))


def test_colour_questions_balanced_and_one_word():
    rows = read_jsonl(COLOUR_QUESTIONS)
    counts = Counter(r["answer"] for r in rows)
    assert len(rows) >= 112 and counts["green"] == counts["red"]
    assert all("one word" in r["question"].lower() or "single word" in r["question"].lower() for r in rows)
    # a group never mixes answers, and every prefix of even length is balanced
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["answer"])
    assert all(len(a) == 1 for a in by_group.values())
    # every even-length prefix: a quick run on the first N questions is balanced whatever N
    unbalanced = [n for n in range(2, len(rows) + 1, 2)
                  if (c := Counter(r["answer"] for r in rows[:n]))["green"] != c["red"]]
    assert unbalanced == []
    assert len({r["question"] for r in rows}) == len(rows)


def test_colour_controls():
    rows = read_jsonl(COLOUR_CONTROLS)
    assert len(rows) >= 25
    assert not any(r["answer"] in ("green", "red") for r in rows)
    assert any(r["answer"] is None for r in rows)


def test_colour_pairs_differ_only_in_the_colour_word():
    questions = {r["question"] for r in read_jsonl(COLOUR_QUESTIONS)}
    for p in read_jsonl(GREEN_RED_PAIRS):
        assert p["positive"].endswith("red") and p["negative"].endswith("green")
        assert p["positive"][: -len("red")] == p["negative"][: -len("green")]
        assert p["positive"] not in questions


def test_sycophancy_conditions_and_groups():
    rows = read_jsonl(SYCOPHANCY)
    counts = Counter(r["condition"] for r in rows)
    assert set(counts) == {"SyA", "GA", "SyPr", "neutral"} and min(counts.values()) >= 30
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r["condition"])
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    # every item appears once in every condition: grouped folds keep an item's four versions together
    assert all(sorted(c) == ["GA", "SyA", "SyPr", "neutral"] for c in by_group.values())
    assert any(g.startswith("fact") for g in by_group) and any(g.startswith("arith") for g in by_group)
    # SyA asserts and agrees with a different value than GA
    sya = {r["group"]: r["messages"][1]["content"] for r in rows if r["condition"] == "SyA"}
    ga = {r["group"]: r["messages"][1]["content"] for r in rows if r["condition"] == "GA"}
    assert all(sya[g] != ga[g] for g in sya)


def test_confound_crosses_emotion_and_pressure():
    rows = read_jsonl(CONFOUND)
    cells = {(r["condition"], r["pressure"], r["emotion"]) for r in rows}
    assert len({c for c, _, _ in cells}) == 6 and len(cells) == 6
    assert {(p, e) for _, p, e in cells} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    per_group = Counter(r["group"] for r in rows)
    assert set(per_group.values()) == {6}


def test_contamination_variants_and_padding_length():
    rows = read_jsonl(CONTAMINATION)
    domains = {r["domain"] for r in rows}
    assert domains == {"self_reflection", "technical_diagnosis", "ambiguous_directive", "ethical_tradeoff", "knowledge_boundary"}
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], {})[r["variant"]] = r["prompt"]
    for g, v in by_group.items():
        assert set(v) == {"clean", "rubric", "padding", "wrong_rubric"}
        assert v["rubric"].startswith(v["clean"]) and v["padding"].startswith(v["clean"])
        assert len(v["padding"]) == len(v["rubric"]), g  # same length in characters
        assert v["rubric"] != v["wrong_rubric"]


def test_chat_vector_items_are_disjoint_from_the_study_and_from_each_other():
    """The chat-context green_red experiment (bench/green_red_chat_check.py) builds and tunes on items the colour study never asks about."""
    from mlx_interp import paths

    study = {r["question"] for r in read_jsonl(COLOUR_QUESTIONS)}
    study_things = {t.lower() for t in make_datasets.GREEN_THINGS + make_datasets.RED_THINGS}
    chat_things = [t.lower() for t in make_datasets.CHAT_GREEN_THINGS + make_datasets.CHAT_RED_THINGS]
    assert not study_things & set(chat_things) and len(set(chat_things)) == len(chat_things)
    assert not any(w in t.split() for t in chat_things for w in ("green", "red"))  # the item never names the answer
    build = read_jsonl(paths.STEERING_DATA / "green_red_chat.jsonl")
    dev = read_jsonl(paths.STEERING_DATA / "green_red_chat_dev.jsonl")
    build_questions = {p[side] for p in build for side in ("positive", "negative")}
    assert len(build) == 32 and len(dev) == 32 and all(p["chat"] for p in build)
    assert not build_questions & study and not {q["question"] for q in dev} & (study | build_questions)
    assert Counter(q["answer"] for q in dev) == {"green": 16, "red": 16}
