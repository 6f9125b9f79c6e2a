"""Grammar engines for constrained decoding, measured on the default model's tokenizer (49k tokens, CPU).

For each engine and schema: the time to compile the schema for this
vocabulary, and the time to compute the allowed-token mask at each step
while walking a valid document token by token (what the decode loop pays per
row per step). Then which JSON-schema features each engine accepts.

    python bench/bench_grammar_engines.py [--json out.json]

xgrammar is measured only if it imports (its 0.2.8 wheel imports torch at
module level, so it needs torch installed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "agent_tool": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "options": {
                "type": "object",
                "properties": {"hourly": {"type": "boolean"}, "fields": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
                "required": ["hourly"],
                "additionalProperties": False,
            },
        },
        "required": ["city", "unit", "days", "options"],
        "additionalProperties": False,
    },
}
DOCS = {
    "flat": {"name": "Ada Lovelace", "age": 36},
    "agent_tool": {"city": "Paris", "unit": "celsius", "days": 3, "options": {"hourly": True, "fields": ["temp", "rain", "wind"]}},
    "json_object": {"a": [1, 2, {"b": "text with spaces"}], "c": None, "d": 3.5},
}

FEATURES = {
    "$ref/$defs": {"$defs": {"p": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
                   "type": "object", "properties": {"a": {"$ref": "#/$defs/p"}}, "required": ["a"]},
    "recursive $ref": {"$defs": {"n": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
                       "$ref": "#/$defs/n"},
    "anyOf": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "oneOf": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]},
    "type list (nullable)": {"type": ["string", "null"]},
    "enum": {"enum": ["a", "b", 3]},
    "const": {"const": "fixed"},
    "pattern": {"type": "string", "pattern": "^[a-z]{2,5}-[0-9]+$"},
    "format date-time": {"type": "string", "format": "date-time"},
    "minLength/maxLength": {"type": "string", "minLength": 2, "maxLength": 8},
    "minimum/maximum": {"type": "integer", "minimum": -5, "maximum": 500},
    "exclusiveMinimum": {"type": "number", "exclusiveMinimum": 0},
    "minItems/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    "additionalProperties schema": {"type": "object", "additionalProperties": {"type": "integer"}},
    "additionalProperties false": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    "prefixItems": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
    "patternProperties": {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
}


def hf_tokenizer():
    from mlx_interp.steering.model import load_model

    lm = load_model("default")
    return lm.tokenizer._tokenizer


def _byte_decoder():
    """GPT-2 byte-level alphabet back to bytes (the default model's tokenizer is byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class LLGuidance:
    name = "llguidance"

    def __init__(self, tok):
        import llguidance
        import llguidance.hf

        self.ll = llguidance
        self.tok = llguidance.hf.from_tokenizer(tok)
        self.vocab = self.tok.vocab_size

    def compile(self, schema):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        m = self.ll.LLMatcher(self.tok, grammar, log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def any_json(self):
        grammar = self.ll.LLMatcher.grammar_from_json_schema({}, defaults={"whitespace_flexible": False})
        return self.ll.LLMatcher(self.tok, grammar, log_level=0)

    def walk(self, m, tokens):
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        mask = allocate_token_bitmask(1, self.vocab)
        times = []
        for t in tokens:
            t0 = time.perf_counter()
            fill_next_token_bitmask(m, mask, 0)
            times.append(time.perf_counter() - t0)
            if not (mask[0, t // 32] >> (t % 32)) & 1:
                raise AssertionError(f"valid token {t} masked out")
            if not m.consume_token(t):
                raise AssertionError(m.get_error())
        return times


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tok):
        import outlines_core

        self.oc = outlines_core
        dec = _byte_decoder()
        eos = tok.eos_token_id
        vocab = {}
        for token, i in tok.get_vocab().items():
            if i == eos or token in tok.all_special_tokens:
                continue
            try:
                vocab.setdefault(bytes(dec[ch] for ch in token), []).append(i)
            except KeyError:
                continue
        self.vocabulary = outlines_core.Vocabulary(eos, vocab)
        self.vocab = len(tok)

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Guide(self.oc.Index(regex, self.vocabulary))

    def any_json(self):
        raise NotImplementedError("outlines-core compiles regular expressions; arbitrary JSON is not regular")

    def walk(self, guide, tokens):
        mask = np.zeros((self.vocab + 31) // 32, dtype=np.int32)
        times = []
        for t in tokens:
            t0 = time.perf_counter()
            guide.write_mask_into(mask.ctypes.data, mask.size, 4)
            times.append(time.perf_counter() - t0)
            if not (mask[t // 32] >> (t % 32)) & 1:
                raise AssertionError(f"valid token {t} masked out")
            guide.advance(t)
        return times


class XGrammar:
    name = "xgrammar"

    def __init__(self, tok):
        import xgrammar

        self.xg = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tok)
        self.compiler = xgrammar.GrammarCompiler(info)
        self.vocab = info.vocab_size

    def compile(self, schema):
        return self.xg.GrammarMatcher(self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False))

    def any_json(self):
        return self.xg.GrammarMatcher(self.compiler.compile_builtin_json_grammar())

    def walk(self, m, tokens):
        mask = self.xg.allocate_token_bitmask(1, self.vocab)
        times = []
        for t in tokens:
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(mask)
            times.append(time.perf_counter() - t0)
            m.accept_token(t)
        return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    tok = hf_tokenizer()
    report = {"vocab": len(tok), "engines": {}}
    engines = []
    for cls in (LLGuidance, OutlinesCore, XGrammar):
        t0 = time.perf_counter()
        try:
            engines.append((cls(tok), time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - an engine that does not load is reported, not fatal
            report["engines"][cls.name] = {"unavailable": f"{type(exc).__name__}: {str(exc)[:160]}"}
            print(f"{cls.name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
    for eng, setup_s in engines:
        r = report["engines"][eng.name] = {"tokenizer_setup_ms": round(setup_s * 1e3, 1), "schemas": {}, "features": {}}
        print(f"\n{eng.name}: tokenizer setup {setup_s * 1e3:.0f} ms")
        for name in ("flat", "agent_tool", "json_object"):
            doc = json.dumps(DOCS[name], separators=(",", ":"))
            tokens = tok.encode(doc, add_special_tokens=False)
            try:
                t0 = time.perf_counter()
                m = eng.any_json() if name == "json_object" else eng.compile(SCHEMAS[name])
                compile_s = time.perf_counter() - t0
                times = eng.walk(m, tokens)
            except Exception as exc:  # noqa: BLE001
                r["schemas"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                print(f"  {name:12s} error: {str(exc)[:100]}")
                continue
            us = [t * 1e6 for t in times]
            row = {
                "compile_ms": round(compile_s * 1e3, 2),
                "tokens": len(tokens),
                "mask_us_median": round(statistics.median(us), 1),
                "mask_us_p90": round(sorted(us)[int(0.9 * (len(us) - 1))], 1),
                "mask_us_max": round(max(us), 1),
            }
            r["schemas"][name] = row
            print(f"  {name:12s} compile {row['compile_ms']:8.1f} ms   mask median {row['mask_us_median']:7.1f} us"
                  f"  p90 {row['mask_us_p90']:7.1f}  max {row['mask_us_max']:8.1f}  ({len(tokens)} tokens)")
        ok = []
        for feat, schema in FEATURES.items():
            try:
                eng.compile(schema)
                r["features"][feat] = True
                ok.append(feat)
            except Exception as exc:  # noqa: BLE001
                r["features"][feat] = f"refused: {str(exc)[:100]}"
        print(f"  features: {len(ok)}/{len(FEATURES)} accepted; refused: {[f for f in FEATURES if f not in ok]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
