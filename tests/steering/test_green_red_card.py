"""The design card's example on the default model: `{"green_red": 1.5}` flips a colour answer coherently.

Coherence is judged by the unsteered model with the calibration rule
(steering/calibration.py `is_coherent`: the steered answer's mean token
log-probability at least COHERENT_LOGPROB, or at most MAX_LOGPROB_DROP below the
unsteered answer's), not by matching a fixed string.
"""

import re

import pytest

from mlx_interp.steering.calibration import continuation_logprobs, is_coherent
from mlx_interp.steering.capture import encode
from mlx_interp.steering.generation import generate

pytestmark = pytest.mark.integration

CARD_ALPHA = 1.5
QUESTION = "What colour is fresh grass? Answer with one word."
COLOUR = re.compile(r"\b(green|red|blue|yellow|white|black|orange|purple|brown|pink|grey)\b", re.I)


@pytest.fixture(scope="module")
def green_red(default_lm):
    from mlx_interp.gateway.catalog import SHIPPED_VECTORS
    from mlx_interp.steering.vectors import SteeringVector

    return SteeringVector.load(SHIPPED_VECTORS / "green_red.json", fingerprint=default_lm.fingerprint)


def _first_colour(text):
    m = COLOUR.search(text)
    return m.group(1).lower() if m else None


@pytest.fixture(scope="module")
def answers(default_lm, green_red):
    """Greedy answers to QUESTION: unsteered, the card's add, reflect at alpha 1; one batch."""
    card = green_red.intervention(alpha=CARD_ALPHA)  # the shorthand: add, recommended layers
    mirror = green_red.intervention(alpha=1.0, op="reflect")
    plain, added, reflected = generate(default_lm, [QUESTION] * 3, [[], [card], [mirror]], max_tokens=10, chat=True)
    return plain, added, reflected


def _coherent(lm, plain, steered) -> bool:
    """The calibration rule, scored by the unsteered model."""
    prompt = encode(lm, QUESTION, chat=True)
    base = float(continuation_logprobs(lm, prompt, plain.tokens)[0].mean())
    lp = float(continuation_logprobs(lm, prompt, steered.tokens)[0].mean())
    return is_coherent(lp, base - lp)


def test_the_card_example_turns_grass_red_in_readable_text(default_lm, answers):
    plain, added, _ = answers
    # the 135M model's unsteered answer often names no colour ("The colour of fresh grass is a mix"): never red
    assert _first_colour(plain.text) != "red", plain.text
    assert _first_colour(added.text) == "red", added.text
    assert _coherent(default_lm, plain, added), (plain.text, added.text)


def test_reflect_at_one_turns_grass_red_in_readable_text(default_lm, answers):
    plain, _, reflected = answers
    assert _first_colour(reflected.text) == "red", reflected.text
    assert _coherent(default_lm, plain, reflected), (plain.text, reflected.text)


def test_the_shipped_vector_is_calibrated_and_the_card_alpha_is_at_the_edge_of_its_range(green_red):
    """Calibrated on neutral prompts, the range ends at 1.25 (docs/steering.md): the card's 1.5 still reads
    well on a colour question (the tests above) but breaks a neutral answer, so the echo warns about it."""
    assert green_red.calibrated
    low, high = green_red.coherent_range
    assert low < 0 < 1.0 <= high < CARD_ALPHA <= high + 0.5
    assert green_red.default_alpha == green_red.metadata["calibration"]["recommended_alpha"] == high
