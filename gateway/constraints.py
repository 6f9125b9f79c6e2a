"""Constrained decoding: a grammar per row masks the logits inside the batched decode loop.

The grammar engine is llguidance (docs/structured-output.md says why). A
request's grammar is built and checked on the event loop (`check_grammar`,
no tokenizer needed, a few ms); the model thread turns it into one matcher
per row (`GrammarEngine.matcher`). Each decode step the engine asks every
constrained row for its allowed-token bitmask, applies them all to the
batch's logits in one mlx op (`apply_masks`), samples, and feeds each row's
token back to its matcher (`RowConstraint.consume`). Rows without a
constraint are left as they are, and a batch with no constrained row never
calls anything here.

JSON is generated compact (no optional whitespace): fewer tokens, and a small
model cannot wander into endless blank space inside an object.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .errors import BadRequest

JSON_OPTIONS = {"whitespace_flexible": False}


@dataclass(frozen=True)
class Grammar:
    """A checked llguidance grammar (its serialized form) and what it was built from, for messages."""

    text: str
    source: str  # "response_format", "tools"


def _ll():
    import llguidance

    return llguidance


def schema_grammar(schema: dict) -> str:
    return _ll().LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)


def lark_grammar(lark: str) -> str:
    return _ll().LLMatcher.grammar_from_lark(lark)


def json_in_lark(schema: dict) -> str:
    """A schema as a lark rule body (`%json {...}`), to combine JSON with free text in one grammar."""
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS}, separators=(",", ":"))


def check_grammar(grammar: str, param: str, source: str) -> Grammar:
    """400 naming `param` if the engine refuses the grammar (bad schema, unsupported keyword)."""
    try:
        is_error, messages = _ll().LLMatcher.validate_grammar_with_warnings(grammar)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"{param}: the schema cannot be compiled: {str(exc)[:300]}", param=param) from None
    if is_error:
        reason = "; ".join(messages)[:300]
        raise BadRequest(f"{param}: the schema is invalid or uses an unsupported feature: {reason}", param=param)
    return Grammar(grammar, source)


class GrammarEngine:
    """The model's tokenizer as the grammar engine sees it; built once (about 3 s for a 49k vocabulary), on first use."""

    def __init__(self, tokenizer, vocab_size: int):
        self._hf = getattr(tokenizer, "_tokenizer", tokenizer)
        self._eos = list(getattr(tokenizer, "eos_token_ids", None) or [self._hf.eos_token_id])
        self.vocab_size = vocab_size
        self._tok = None
        self._lock = threading.Lock()
        # Bit positions of every vocabulary entry in a (words of 32 bits) bitmask, built once.
        ids = np.arange(vocab_size)
        self._word = mx.array(ids // 32)
        self._bit = mx.array((ids % 32).astype(np.uint32))

    def _tokenizer(self):
        with self._lock:
            if self._tok is None:
                import llguidance.hf

                self._tok = llguidance.hf.from_tokenizer(self._hf, n_vocab=self.vocab_size, eos_token=self._eos)
            return self._tok

    def matcher(self, grammar: Grammar) -> "RowConstraint":
        try:
            tokenizer = self._tokenizer()
        except Exception as exc:  # noqa: BLE001 - e.g. a slow (non-Rust) tokenizer the engine cannot read
            raise BadRequest(f"{grammar.source}: constrained decoding is not available for this model's tokenizer ({str(exc)[:200]})",
                             param=grammar.source) from None
        m = _ll().LLMatcher(tokenizer, grammar.text, log_level=0)
        if m.is_error():  # checked at validation; a tokenizer-specific failure still must not reach decoding
            raise BadRequest(f"{grammar.source}: the grammar cannot be used with this model: {m.get_error()[:300]}", param=grammar.source)
        return RowConstraint(m, self)

    def words(self) -> int:
        return (self.vocab_size + 31) // 32


class RowConstraint:
    """One row's matcher: what it may emit next, and the tokens it has emitted."""

    def __init__(self, matcher, engine: GrammarEngine):
        self.matcher = matcher
        self.engine = engine

    def fill(self, out: np.ndarray) -> None:
        """Write the allowed-token bitmask of the next step into `out` (int32 words)."""
        if self.matcher.is_error() or self.matcher.is_stopped():
            out[:] = 0
            bits = out.view(np.uint32)
            for t in self.engine._eos:  # a finished or broken matcher allows only the end
                bits[t // 32] |= np.uint32(1 << (t % 32))
            return
        self.matcher.unsafe_compute_mask_ptr(out.ctypes.data, out.size * out.itemsize)

    def consume(self, token: int) -> None:
        if not self.matcher.is_stopped():
            self.matcher.consume_token(token)

    @property
    def complete(self) -> bool:
        """The grammar has matched a whole document and nothing more may follow."""
        return self.matcher.is_stopped() and not self.matcher.is_error()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()


def bitmasks(constraints: list) -> np.ndarray | None:
    """(B, words) allowed-token bitmasks for a batch; rows without a constraint allow everything. None: no row is constrained."""
    live = [(i, c) for i, c in enumerate(constraints) if c is not None]
    if not live:
        return None
    engine = live[0][1].engine
    masks = np.full((len(constraints), engine.words()), -1, dtype=np.int32)
    for i, c in live:
        c.fill(masks[i])
    return masks


def apply_masks(logits: mx.array, masks: np.ndarray, engine: GrammarEngine) -> mx.array:
    """(B, V) logits with every disallowed token set to -inf."""
    words = mx.array(masks.view(np.uint32))
    allowed = (mx.take(words, engine._word, axis=1) >> engine._bit) & 1
    V = logits.shape[-1]
    if V != engine.vocab_size:  # never expected: the engine is built with the model's logit width
        raise RuntimeError(f"logit width {V} differs from the grammar vocabulary {engine.vocab_size}")
    return mx.where(allowed.astype(mx.bool_), logits, mx.array(-mx.inf, logits.dtype))
