"""Chat-formatted contrast data for issue 8's reflect question, disjoint from the colour study.

The colour study (experiments/colour_swap.py) has no train/test split: it evaluates on all 60 items of
experiments/data/colour_questions.jsonl. So the objects below are NEW green and red things, none of which
is an item of colour_questions.jsonl (checked by `check_disjoint`), asked with the study's six phrasings
(make_datasets' templates) in the study's prompt (system "Answer with one word.", assistant prefix
"The answer is"). Neutral rows are the controls NOT in the sweep's subset (the subset uses the first 16).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common import COLOUR_CONTROLS, COLOUR_QUESTIONS, read_jsonl  # noqa: E402

# no object names its own colour (no "red rose"), so a direction read from them is about the thing's colour
GREEN_OBJECTS = [
    "a frog", "an avocado's skin", "guacamole", "a pea pod", "a pistachio nut", "an iguana",
    "a cabbage", "a four-leaf clover", "seaweed", "a praying mantis", "a jalapeno pepper", "Shrek's skin",
    "Yoda's skin", "a Christmas tree", "a kiwi fruit's flesh", "a grasshopper", "wasabi paste",
    "an olive", "a brussels sprout", "a golf course fairway",
]
RED_OBJECTS = [
    "a rose", "a radish", "strawberry jam", "paprika", "a Ferrari sports car",
    "a can of Coca-Cola", "Superman's cape", "Mario's hat", "Spider-Man's suit", "hot lava",
    "a rooster's comb", "tabasco sauce", "the Swiss flag", "a Radio Flyer wagon", "a cooked crab", "a fire alarm",
    "a pair of boxing gloves", "a valentine's heart", "the Chinese flag", "a maraschino cherry",
]
# the study's six phrasings (experiments/make_datasets.py)
TEMPLATES = [
    "What colour is {x}? Answer with one word.",
    "Name the colour of {x}. Answer with one word.",
    "{X} is usually what colour? Reply with a single word.",
    "Which colour best describes {x}? One word only.",
    "Tell me the colour of {x}, in one word.",
    "In one word, what is the colour of {x}?",
]
SUBSET_CONTROLS = 16  # the sweep's subset uses controls[:16]


def _fill(t: str, x: str) -> str:
    return t.format(x=x, X=x[0].upper() + x[1:])


def chat_questions(objects, templates=TEMPLATES, per_object: int = 2, offset: int = 0) -> list[str]:
    """per_object phrasings per object, rotating through the templates."""
    out = []
    for i, x in enumerate(objects):
        for k in range(per_object):
            out.append(_fill(templates[(offset + i * per_object + k) % len(templates)], x))
    return out


def train_rows(per_object: int = 2) -> dict[str, list[str]]:
    check_disjoint()
    neutral = [c["question"] for c in read_jsonl(COLOUR_CONTROLS)[SUBSET_CONTROLS:]]
    return {"green": chat_questions(GREEN_OBJECTS, per_object=per_object),
            "red": chat_questions(RED_OBJECTS, per_object=per_object, offset=1), "neutral": neutral}


def check_disjoint() -> None:
    """No object phrase of ours occurs in the study's questions (near neighbours such as a red apple vs the
    study's candy apple are different items)."""
    study = " ".join(q["question"].lower() for q in read_jsonl(COLOUR_QUESTIONS))
    bad = [x for x in GREEN_OBJECTS + RED_OBJECTS if x.lower() in study]
    if bad:
        raise ValueError(f"objects also in the study's questions: {bad}")


if __name__ == "__main__":
    rows = train_rows()
    for k, v in rows.items():
        print(k, len(v), v[:3])
