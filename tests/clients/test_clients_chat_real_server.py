"""`mlx-interp chat` against the real server (tiny model): the errors a user sees are the server's own words.

The fake server (fake_mlx_server.py) makes the client's paths fast to test; this file pins what
the real server answers, so the chat's error lines cannot drift from it unnoticed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from chat_driver import run_chat_piped

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
from gateway_helpers import ServerProcess, make_probe, make_vector  # noqa: E402

pytestmark = pytest.mark.server

KEY = "chat-key"


@pytest.fixture(scope="module")
def real_server(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-real")
    make_vector(tiny_llama, "push", root / "vectors", seed=1)
    make_probe(tiny_llama, "alpha_probe", root / "probes", seed=3)
    server = ServerProcess(
        "--model", str(tiny_llama.path), "--vectors", str(root / "vectors"), "--probes", str(root / "probes"),
        "--api-key", KEY, "--max-alpha", "100", env={"MLX_INTERP_HOME": str(root / "home")},
    )
    yield server
    server.stop()


def _chat(server, script: str, *flags: str):
    return run_chat_piped(["--base-url", server.url + "/v1", "--api-key", KEY, "--max-tokens", "3", *flags], script)


def test_alpha_over_the_limit_is_the_servers_one_line_and_the_session_goes_on(real_server):
    done = _chat(real_server, "/steer push 500\nhi\n/steer off\nhi\n")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: steer[0]: |alpha| must be at most 100 for add (--max-alpha), got 500.0 (HTTP 400)",
    ]
    assert done.stdout.count("[probes]") == 0 and "Traceback" not in done.stderr


def test_unknown_names_are_refused_with_what_the_server_has(real_server):
    done = _chat(real_server, "hi\n", "--steer", "ghost=1")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: the server has no vector 'ghost' (it has: push)"
    done = _chat(real_server, "hi\n", "--probes", "alpha_probe,ghost")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: the server has no probe 'ghost' (it has: alpha_probe)"


def test_a_steered_and_probed_turn_prints_the_probe_summary(real_server):
    done = _chat(real_server, "hello\n", "--steer", "push=2", "--probes", "alpha_probe")
    assert done.returncode == 0, done.stderr
    assert "[probes] alpha_probe mean " in done.stdout
