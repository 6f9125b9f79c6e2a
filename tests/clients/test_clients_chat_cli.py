"""`mlx-interp chat` as a process, against the local api.md-shaped server: pipe, terminal, errors."""

import re
import socket

import pytest
from chat_driver import PROMPT, PtyChat, run_chat_piped
from fake_mlx_server import FakeServer

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def server():
    with FakeServer(api_key="sekrit") as fake:
        yield fake


def test_piped_chat_is_plain_and_keeps_history(server):
    script = "/steer green_red 1.5\n/probes sycophancy\nWhat is 2+2?\n\nAre you sure?\n/history\n"
    done = run_chat_piped(["--base-url", server.base_url, "--api-key", "sekrit", "--max-tokens", "8"], script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out and "you>" not in out  # no terminal decoration in a pipe
    assert out.count("\nThe answer is 4.\n[probes]") == 2
    assert "steering: green_red=1.5" in out and "probes: sycophancy" in out
    assert "[probes] sycophancy mean 0.49 max 0.95" in out
    assert "user: Are you sure?" in out
    last = server.requests[-1]["body"]
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "user"]
    assert last["steer"][0] == {"vector": "green_red", "alpha": 1.5, "op": "add", "scope": "all"}
    assert last["max_tokens"] == 8


def test_key_from_environment_and_flags(server):
    done = run_chat_piped(["--base-url", server.base_url, "--steer", "green_red=2", "--probes", "emotion"],
                          "hello\n", MLX_INTERP_API_KEY="sekrit")
    assert done.returncode == 0, done.stderr
    assert server.requests[-1]["body"]["probes"] == {"emotion": {"per_token": True}}
    assert server.requests[-1]["body"]["steer"][0]["alpha"] == 2.0


def test_bad_request_is_one_line_and_a_script_fails(server):
    script = "/steer nope 1\n/steer green_red 500\nhi\n/steer off\nhi\n"
    done = run_chat_piped(["--base-url", server.base_url, "--api-key", "sekrit"], script)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the server has no vector 'nope' (it has: calm, green_red)",
        "error: steer[0]: |alpha| must be at most 100 for add (--max-alpha), got 500.0 (HTTP 400)",
    ]
    assert done.stdout.count("The answer is 4.") == 1  # the session went on after the errors


@pytest.mark.parametrize("flags, message", [
    (["--model", "ghost"], "error: the server has no model 'ghost' (it has: tiny-model)"),
    (["--steer", "ghost=1"], "error: the server has no vector 'ghost' (it has: calm, green_red)"),
    (["--probes", "sycophancy,ghost"], "error: the server has no probe 'ghost' (it has: emotion, sycophancy)"),
])
def test_unknown_names_in_flags_are_one_line(server, flags, message):
    done = run_chat_piped(["--base-url", server.base_url, "--api-key", "sekrit", *flags], "hi\n")
    assert done.returncode == 1
    assert done.stderr.strip() == message


def test_wrong_key_is_one_line(server):
    done = run_chat_piped(["--base-url", server.base_url, "--api-key", "wrong"], "hi\n")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: ") and "401" in done.stderr and "Traceback" not in done.stderr


def test_server_down_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_chat_piped(["--base-url", f"http://127.0.0.1:{port}/v1"], "hi\n")
    assert done.returncode == 3
    assert done.stderr.strip() == f"error: cannot reach the server at http://127.0.0.1:{port}/v1; is `mlx-interp serve` (or the service) running?"


def test_bad_flag_value_is_one_line(server):
    done = run_chat_piped(["--base-url", server.base_url, "--steer", "green_red=much"], "")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: alpha for 'green_red' must be a number, got 'much'"


def test_terminal_chat_shows_a_live_meter(server):
    chat = PtyChat(["--base-url", server.base_url, "--api-key", "sekrit"])
    try:
        banner = chat.read_until(PROMPT, timeout=60)
        assert b"tiny-model" in banner and b"/help" in banner
        assert b"steering: green_red=1.5" in chat.exchange("/steer green_red 1.5")
        assert b"probes: sycophancy" in chat.exchange("/probes sycophancy")
        out = chat.exchange("What is 2+2?")
        # the meter is drawn after tokens and erased before the next one
        assert b"sycophancy \xe2\x96\x88 0.95" in out or b"sycophancy \xe2\x96\x87 0.95" in out
        assert b"\x1b[K" in out
        plain = ANSI.sub(b"", out)
        assert b"[probes] sycophancy mean 0.49 max 0.95" in plain
        help_text = chat.exchange("/help")
        assert b"/steer off" in help_text
        assert b"steering: off" in chat.exchange("/steer off")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
    body = server.requests[-1]["body"]
    assert body["probes"] == {"sycophancy": {"per_token": True}}
    assert body["steer"][0]["vector"] == "green_red"
