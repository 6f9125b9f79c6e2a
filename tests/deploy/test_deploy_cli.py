"""`mlx-interp service ...` as a real process under a temporary HOME, the service tools replaced by a recorder."""

import json
import os
import plistlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UID = os.getuid()
LABEL = "com.mlx-interp.server"

RECORDER = """\
import json, os, sys
with open(os.environ["RECORD_FILE"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[1])] + sys.argv[2:]) + "\\n")
if os.environ.get("RECORDER_FAIL") == sys.argv[2]:
    print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
    sys.exit(5)
"""


class Sandbox:
    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.record = tmp_path / "calls.jsonl"
        recorder = tmp_path / "recorder.py"
        recorder.write_text(RECORDER)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_INTERP_")}
        self.env.update({"HOME": str(self.home), "RECORD_FILE": str(self.record), "PYTHONPATH": str(ROOT)})
        # Any CLI start builds the gemv shim into the model cache once (steering/backend.py); keep
        # that cache out of the home whose files these tests count.
        self.env["MLX_INTERP_CACHE"] = str(tmp_path / "model-cache")
        for tool in ("launchctl", "systemctl", "journalctl", "tail"):
            self.env[f"MLX_INTERP_{tool.upper()}"] = f"{sys.executable} {recorder} {tool}"

    def run(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlx_interp.cli", "service", *args], capture_output=True,
                              text=True, input=stdin, cwd=str(ROOT), env={**self.env, **env}, timeout=60)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        calls = [json.loads(line) for line in self.record.read_text().splitlines()]
        self.record.unlink()
        return calls

    def tree(self) -> set[str]:
        return {str(p.relative_to(self.home)) for p in self.home.rglob("*")}


@pytest.fixture()
def box(tmp_path):
    return Sandbox(tmp_path)


def test_macos_install_status_uninstall(box):
    vectors = box.home / "my-vectors"
    vectors.mkdir()
    done = box.run("install", "--platform", "macos", "--port", "8765", "--api-key", "sekret", "--vectors", str(vectors))
    assert done.returncode == 0, done.stderr
    plist = box.home / f"Library/LaunchAgents/{LABEL}.plist"
    assert box.calls() == [["launchctl", "bootout", f"gui/{UID}/{LABEL}"],
                           ["launchctl", "enable", f"gui/{UID}/{LABEL}"],
                           ["launchctl", "bootstrap", f"gui/{UID}", str(plist)]]
    data = plistlib.loads(plist.read_bytes())
    assert data["ProgramArguments"] == [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", "default",
                                        "--host", "127.0.0.1", "--port", "8765", "--vectors", str(vectors)]
    assert data["EnvironmentVariables"]["MLX_INTERP_API_KEY"] == "sekret"
    assert plist.stat().st_mode & 0o777 == 0o600
    assert (box.home / "Library/Logs/mlx-interp").is_dir()
    assert "sekret" not in done.stdout

    # installing again replaces the loaded job the same way
    assert box.run("install", "--platform", "macos", "--port", "8765").returncode == 0
    assert box.calls() == [["launchctl", "bootout", f"gui/{UID}/{LABEL}"],
                           ["launchctl", "enable", f"gui/{UID}/{LABEL}"],
                           ["launchctl", "bootstrap", f"gui/{UID}", str(plist)]]
    assert plist.stat().st_mode & 0o777 == 0o644  # no key any more

    assert box.run("restart", "--platform", "macos").returncode == 0
    assert box.calls() == [["launchctl", "kickstart", "-k", f"gui/{UID}/{LABEL}"]]

    status = box.run("status", "--platform", "macos")
    assert status.returncode == 3 and "not answering" in status.stdout  # nothing listens on 8765
    assert box.calls() == [["launchctl", "print", f"gui/{UID}/{LABEL}"]]

    # the user's own files next to ours survive the uninstall, and so do the logs
    other_agent = box.home / "Library/LaunchAgents/com.example.other.plist"
    other_agent.write_text("<plist/>")
    log = box.home / "Library/Logs/mlx-interp/server.log"
    log.write_text("started\n")
    done = box.run("uninstall", "--platform", "macos")
    assert done.returncode == 0, done.stderr
    assert box.calls() == [["launchctl", "bootout", f"gui/{UID}/{LABEL}"]]
    assert not plist.exists() and other_agent.exists() and log.exists()
    assert box.tree() == {"my-vectors", "Library", "Library/LaunchAgents", "Library/LaunchAgents/com.example.other.plist",
                          "Library/Logs", "Library/Logs/mlx-interp", "Library/Logs/mlx-interp/server.log"}


def test_linux_install_logs_uninstall(box):
    done = box.run("install", "--api-key", "-", stdin="sekret\n", MLX_INTERP_SERVICE_PLATFORM="linux")
    assert done.returncode == 0, done.stderr
    assert box.calls() == [["systemctl", "--user", "daemon-reload"],
                           ["systemctl", "--user", "enable", "--now", "mlx-interp.service"]]
    unit = box.home / ".config/systemd/user/mlx-interp.service"
    env_file = box.home / ".config/mlx-interp/service.env"
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m mlx_interp.cli serve --model default --host 127.0.0.1 --port 8000" in text
    assert "sekret" not in text and env_file.stat().st_mode & 0o777 == 0o600
    assert 'MLX_INTERP_API_KEY="sekret"' in env_file.read_text()
    assert "loginctl enable-linger" in done.stdout

    logs = box.run("logs", "-n", "20", "--platform", "linux")
    assert logs.returncode == 0, logs.stderr
    assert box.calls() == [["journalctl", "--user", "-u", "mlx-interp.service", "-n", "20", "--no-pager"]]
    box.run("status", "--platform", "linux")
    assert box.calls() == [["systemctl", "--user", "status", "--no-pager", "mlx-interp.service"]]
    assert box.run("restart", "--platform", "linux").returncode == 0
    assert box.calls() == [["systemctl", "--user", "restart", "mlx-interp.service"]]

    other_unit = box.home / ".config/systemd/user/other.service"
    other_unit.write_text("[Unit]\n")
    done = box.run("uninstall", "--platform", "linux")
    assert done.returncode == 0, done.stderr
    assert box.calls() == [["systemctl", "--user", "disable", "--now", "mlx-interp.service"],
                           ["systemctl", "--user", "daemon-reload"]]
    assert box.tree() == {".config", ".config/systemd", ".config/systemd/user", ".config/systemd/user/other.service"}


def test_linux_log_files_go_through_tail(box):
    assert box.run("install", "--platform", "linux", "--log-files").returncode == 0
    box.calls()
    log = box.home / ".local/state/mlx-interp/server.log"
    missing = box.run("logs", "--platform", "linux")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no log files yet")
    log.write_text("hello\n")
    assert box.run("logs", "--platform", "linux", "-f").returncode == 0
    assert box.calls() == [["tail", "-n", "100", "-F", str(log)]]


def test_dry_run_writes_and_runs_nothing(box):
    for platform in ("macos", "linux"):
        done = box.run("install", "--platform", platform, "--api-key", "sekret", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "dry run" in done.stdout and "sekret" not in done.stdout and "********" in done.stdout
        assert ("bootstrap" in done.stdout) == (platform == "macos")
        assert ("enable --now mlx-interp.service" in done.stdout) == (platform == "linux")
    assert box.tree() == set() and box.calls() == []
    # and an uninstall dry run leaves an installed service alone
    assert box.run("install", "--platform", "linux").returncode == 0
    box.calls()
    before = box.tree()
    done = box.run("uninstall", "--platform", "linux", "--dry-run")
    assert done.returncode == 0 and "remove" in done.stdout
    assert box.tree() == before and box.calls() == []


def test_errors_are_one_line(box):
    failing = box.run("install", "--platform", "macos", RECORDER_FAIL="bootstrap")
    assert failing.returncode == 1
    assert failing.stderr.strip().splitlines() == [
        f"error: `launchctl bootstrap gui/{UID} {box.home}/Library/LaunchAgents/{LABEL}.plist` failed with exit status 5: "
        "Bootstrap failed: 5: Input/output error"
    ]
    # what was written is on record, so uninstall cleans it up
    assert box.run("uninstall", "--platform", "macos").returncode == 0
    missing_tool = box.run("install", "--platform", "linux", MLX_INTERP_SYSTEMCTL="/nonexistent/systemctl")
    assert missing_tool.returncode == 1 and missing_tool.stderr.startswith("error: /nonexistent/systemctl not found")


@pytest.mark.parametrize("args, message", [
    (("uninstall", "--name", "ghost"), "error: no service 'ghost' installed"),
    (("restart", "--name", "ghost"), "error: no service 'ghost' installed"),
    (("install", "--vectors", "/no/such/dir"), "error: --vectors /no/such/dir: not a directory"),
    (("install", "--host", "0.0.0.0"), "error: refusing to serve on 0.0.0.0"),
    (("install", "--env", "NOEQUALS"), "error: --env 'NOEQUALS': expected KEY=VALUE"),
    (("install", "--name", "Bad_Name"), "error: service name 'Bad_Name' is not allowed"),
    (("logs", "-n", "0"), "error: --lines must be at least 1"),
])
def test_user_errors_in_process(box, monkeypatch, capsys, args, message):
    """The same console entry point, called in-process (quicker than a process per case)."""
    from mlx_interp.cli import main

    for key in [k for k in os.environ if k.startswith("MLX_INTERP_")]:
        monkeypatch.delenv(key)
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    assert main(["service", *args, "--platform", "linux"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert box.tree() == set() and box.calls() == []
    assert main(["service", "status", "--platform", "linux", "--name", "ghost"]) == 3


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b'{"status": "ok"}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_status_reports_a_server_that_answers(box):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = str(httpd.server_address[1])
        assert box.run("install", "--platform", "linux", "--port", port, "--name", "second").returncode == 0
        box.calls()
        status = box.run("status", "--platform", "linux", "--name", "second")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"answering at http://127.0.0.1:{port}/health" in status.stdout
        assert box.calls() == [["systemctl", "--user", "status", "--no-pager", "second.service"]]
    finally:
        httpd.shutdown()
        httpd.server_close()
