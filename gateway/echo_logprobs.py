"""`/v1/completions` with `echo` and `logprobs`: the prompt's own tokens scored, as OpenAI's legacy API does.

The echoed prompt comes first in `logprobs`, one entry per prompt token; the
first token has nothing before it, so its log-probability and its top
alternatives are null. Evaluation harnesses (lm-eval's `local-completions`)
sum these entries over a continuation to score it.
"""

from __future__ import annotations

from .protocol import TEXT, GenerationSpec, text_logprobs


def prompt_logprobs_k(spec: GenerationSpec) -> int | None:
    """How many alternatives to score per prompt token, or None when the request does not want the prompt scored."""
    if spec.kind != TEXT or not spec.echo or not spec.sampling.logprobs:
        return None
    return spec.sampling.top_logprobs


def prompt_entries(scored, tokens, texts) -> list[tuple]:
    """(token_text, logprob | None, top | None) per prompt token, from a prefill's PromptLogprobs."""
    out = []
    for tok, lp, top in zip(tokens, scored.token_logprobs, scored.top):
        out.append((texts(tok), lp, None if top is None else [(texts(t), v) for t, v in top]))
    return out


def echoed_logprobs(prompt: list[tuple], generated: list[tuple], prefix_len: int, want_top: bool) -> dict:
    """One legacy logprobs object: the prompt's entries (offsets from 0), then the generated ones (from the prefix's end)."""
    head = text_logprobs(prompt, 0, want_top)
    tail = text_logprobs(generated, prefix_len, want_top)
    return {key: head[key] + tail[key] for key in head}
