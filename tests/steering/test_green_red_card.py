"""The design card's example on the default model: `{"green_red": 1.5}` flips a colour answer coherently.

Coherence is judged by the unsteered model: the steered answer's mean token
log-probability may fall at most MAX_LOGPROB_DROP nats below the unsteered answer's
(the calibration criterion), not by matching a fixed string.
"""

import re

import pytest

from mlx_interp.steering.calibration import MAX_LOGPROB_DROP, continuation_logprobs
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


def test_the_card_example_turns_grass_red_in_readable_text(default_lm, green_red):
    card = green_red.intervention(alpha=CARD_ALPHA)  # the shorthand: add, recommended layers
    plain, steered = generate(default_lm, [QUESTION] * 2, [[], [card]], max_tokens=10, chat=True)
    assert _first_colour(plain.text) == "green", plain.text
    assert _first_colour(steered.text) == "red", steered.text
    prompt = encode(default_lm, QUESTION, chat=True)
    plain_lp = continuation_logprobs(default_lm, prompt, plain.tokens)[0].mean()
    steered_lp = continuation_logprobs(default_lm, prompt, steered.tokens)[0].mean()
    assert plain_lp - steered_lp <= MAX_LOGPROB_DROP, (plain.text, steered.text, plain_lp, steered_lp)


def test_the_shipped_vector_is_calibrated_and_the_card_alpha_is_inside_its_range(green_red):
    assert green_red.calibrated
    low, high = green_red.coherent_range
    assert low < 0 < CARD_ALPHA <= high
