"""Request builders and response readers, on JSON shapes written from api.md."""

import subprocess
import sys

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types import Completion

from mlx_interp.clients import (
    AppliedSteer,
    ProbeRequest,
    Steer,
    chunk_text,
    extension_body,
    parse_steer_text,
    probe_scores,
    probes_body,
    probes_header,
    steer_body,
    steer_header,
    steering_applied,
)

RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Yes."},
            "probes": {
                "sycophancy": {
                    "score": 0.83, "layer": 12, "aggregate": "mean",
                    "per_layer": [None, 0.51, 0.55], "per_token": [0.2, 0.9],
                    "prompt_score": 0.4, "threshold": 0.8, "flagged": True,
                }
            },
        },
        {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "No."},
         "probes": {"sycophancy": {"score": 0.1, "threshold": 0.8, "flagged": False}}},
    ],
    "steering": {"applied": [{"vector": "green_red", "alpha": [0.5, 2.0], "op": "add",
                              "layers": [8, 9, 10], "scope": "all", "sha256": "f" * 64,
                              "per_layer_alpha": [0.17, 0.68], "warnings": ["alpha 2 is beyond green_red's coherent range"]}]},
}

TOKEN_CHUNK = {
    "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
    "choices": [{"index": 0, "delta": {"content": " yes"}, "finish_reason": None,
                 "probes": {"sycophancy": {"score": 0.9}}}],
}


def test_steer_body_full_and_shorthand():
    body = steer_body([Steer("green_red", 1.5, op="reflect", layers="8-16", scope="generation")])
    assert body == {"steer": [{"vector": "green_red", "alpha": 1.5, "op": "reflect",
                               "layers": "8-16", "scope": "generation"}]}
    assert steer_body({"calm": -0.5}) == {"steer": [{"vector": "calm", "alpha": -0.5, "op": "add", "scope": "all"}]}
    assert steer_body(Steer("c", 1, op="clamp", value=2.0, layers=[3, 4]))["steer"][0]["value"] == 2.0
    assert steer_body(Steer("g", [0.0, 1.0, 2.0]))["steer"][0]["alpha"] == [0.0, 1.0, 2.0]


def test_steer_header_only_carries_the_shorthand():
    assert steer_header([Steer("green_red", 1.5), Steer("calm", -0.5)]) == {"X-Steer": "green_red=1.5, calm=-0.5"}
    assert steer_header({"x": 2.0}) == {"X-Steer": "x=2"}
    with pytest.raises(ValueError, match="body form"):
        steer_header(Steer("green_red", 1.5, layers="8-16"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vector": "../etc", "alpha": 1}, "not valid"),
        ({"vector": "v", "alpha": float("nan")}, "finite"),
        ({"vector": "v", "alpha": 1, "op": "multiply"}, "op must be"),
        ({"vector": "v", "alpha": 1, "scope": "later"}, "scope must be"),
        ({"vector": "v", "alpha": 1, "op": "clamp"}, "needs a value"),
    ],
)
def test_steer_refuses_what_the_server_would_refuse(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Steer(**kwargs)


def test_probes_body_and_header():
    assert probes_body(["sycophancy", "emotion"]) == {"probes": ["sycophancy", "emotion"]}
    assert probes_body("all") == {"probes": "all"}
    assert probes_body("sycophancy") == {"probes": ["sycophancy"]}
    assert probes_body([ProbeRequest("sycophancy", per_token=True, threshold=0.8)]) == {
        "probes": {"sycophancy": {"per_token": True, "threshold": 0.8}}
    }
    assert probes_header(["sycophancy", "emotion"]) == {"X-Probes": "sycophancy, emotion"}
    with pytest.raises(ValueError, match="body form"):
        probes_header([ProbeRequest("sycophancy", per_token=True)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ProbeRequest("s", threshold=1.5)
    assert extension_body(steer={"g": 1.0}, probes=["s"]) == {
        "steer": [{"vector": "g", "alpha": 1.0, "op": "add", "scope": "all"}], "probes": ["s"]}
    assert extension_body() == {}


def test_parse_steer_text():
    assert parse_steer_text("green_red=1.5, calm=-0.5") == [Steer("green_red", 1.5), Steer("calm", -0.5)]
    assert parse_steer_text("green_red 1.5") == [Steer("green_red", 1.5)]
    with pytest.raises(ValueError, match="must be a number"):
        parse_steer_text("green_red=lots")
    with pytest.raises(ValueError, match="NAME=ALPHA"):
        parse_steer_text("green_red")


@pytest.mark.parametrize("as_model", [False, True])
def test_probe_scores_of_a_response(as_model):
    response = ChatCompletion.model_validate(RESPONSE) if as_model else RESPONSE
    scores = probe_scores(response)
    result = scores["sycophancy"]
    assert result.score == 0.83 and result.layer == 12 and result.aggregate == "mean"
    assert result.per_layer == [None, 0.51, 0.55] and result.per_token == [0.2, 0.9]
    assert result.prompt_score == 0.4 and result.threshold == 0.8 and result.flagged is True
    assert result.is_aggregate
    assert probe_scores(response, index=1)["sycophancy"].flagged is False
    # a single choice works too
    choice = response.choices[1] if as_model else RESPONSE["choices"][1]
    assert probe_scores(choice)["sycophancy"].score == 0.1


@pytest.mark.parametrize("as_model", [False, True])
def test_steering_applied(as_model):
    response = ChatCompletion.model_validate(RESPONSE) if as_model else RESPONSE
    (applied,) = steering_applied(response)
    assert applied == AppliedSteer("green_red", [0.5, 2.0], "add", [8, 9, 10], "all", "f" * 64,
                                   [0.17, 0.68], ["alpha 2 is beyond green_red's coherent range"])
    assert steering_applied({"choices": []}) == []
    old_server = {"steering": {"applied": [{"vector": "v", "alpha": 1.0}]}}  # no per_layer_alpha, no warnings
    assert steering_applied(old_server)[0].per_layer_alpha is None and steering_applied(old_server)[0].warnings == []


def test_stream_chunk_token_scores():
    chunk = ChatCompletionChunk.model_validate(TOKEN_CHUNK)
    result = probe_scores(chunk)["sycophancy"]
    assert result.score == 0.9 and not result.is_aggregate
    assert chunk_text(chunk) == " yes"
    empty = ChatCompletionChunk.model_validate({**TOKEN_CHUNK, "choices": []})
    assert probe_scores(empty) == {} and chunk_text(empty) == ""


def test_completion_choice_text():
    completion = Completion.model_validate({
        "id": "c", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "hello", "finish_reason": "length", "logprobs": None,
                     "probes": {"s": {"score": 0.5, "per_token": [0.1, 0.9]}}}],
    })
    assert chunk_text(completion) == "hello"
    assert probe_scores(completion)["s"].per_token == [0.1, 0.9]


def test_non_finite_and_odd_values_do_not_crash_the_reader():
    result = probe_scores({"probes": {"s": {"score": "NaN", "layer": True, "per_layer": [1, None, "x"]}}})["s"]
    assert result.score is None and result.layer is None and result.per_layer == [1.0, None, None]


def test_importing_clients_does_not_import_server_code_or_mlx():
    code = (
        "import sys; import clients, clients.chat_cli, clients.monitor, clients.chat, clients.chat_terminal;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'steering', 'probes', 'gateway')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(_root()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_chat_command_registration_stays_light():
    code = "import sys, clients.chat_cli; sys.exit(1 if 'openai' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(_root()))
    assert done.returncode == 0, done.stderr


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
