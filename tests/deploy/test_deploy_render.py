"""The launchd plist and the systemd unit, rendered from one ServiceSpec, and the install plans."""

import os
import plistlib
import shlex
from pathlib import Path

import pytest

from mlx_interp.deploy import launchd, systemd
from mlx_interp.deploy.installer import Manifest, install, plan_install, plan_uninstall, uninstall
from mlx_interp.deploy.plan import RunCommand, WriteFile
from mlx_interp.deploy.service import ServiceSpec

PYTHON = "/opt/venv/bin/python3"


def spec(**kwargs) -> ServiceSpec:
    base = dict(python=PYTHON, model="mlx-community/Qwen2.5-7B-Instruct-4bit", port=8123,
                vectors=("/lib/vectors",), probes=("/lib/probes",), working_directory="/home/u")
    base.update(kwargs)
    return ServiceSpec(**base)


EXPECTED_ARGS = [PYTHON, "-m", "mlx_interp.cli", "serve", "--model", "mlx-community/Qwen2.5-7B-Instruct-4bit",
                 "--host", "127.0.0.1", "--port", "8123", "--vectors", "/lib/vectors", "--probes", "/lib/probes"]


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, keeping repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def unsystemd(word_line: str) -> list[str]:
    """Split an ExecStart= value the way systemd does for the quoting render_unit produces."""
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(word_line)]


def test_plist_has_the_keys_launchd_needs(tmp_path):
    data = plistlib.loads(launchd.render_plist(spec(api_key="k-123"), tmp_path))
    assert data["Label"] == "com.mlx-interp.server"
    assert data["ProgramArguments"] == EXPECTED_ARGS
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ThrottleInterval"] == 10
    assert data["StandardOutPath"] == str(tmp_path / "Library/Logs/mlx-interp/server.log")
    assert data["StandardErrorPath"] == str(tmp_path / "Library/Logs/mlx-interp/server.err.log")
    assert data["WorkingDirectory"] == "/home/u"
    env = data["EnvironmentVariables"]
    # settings travel as arguments only: no variable that nothing reads
    assert not {"MLX_INTERP_MODEL", "MLX_INTERP_HOST", "MLX_INTERP_PORT"} & set(env)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MLX_INTERP_API_KEY"] == "k-123"
    assert "k-123" not in data["ProgramArguments"]  # never on the command line (ps shows it)
    masked = plistlib.loads(launchd.render_plist(spec(api_key="k-123"), tmp_path, mask_secrets=True))
    assert masked["EnvironmentVariables"]["MLX_INTERP_API_KEY"] == "********"


def test_unit_has_sections_and_exec_start(tmp_path):
    text = systemd.render_unit(spec(api_key="k-123", extra_environment=(("MLX_INTERP_CACHE", "/data/m"),)), tmp_path)
    unit = parse_unit(text)
    assert list(unit) == ["Unit", "Service", "Install"]
    service = unit["Service"]
    (exec_start,) = values(service, "ExecStart")
    assert unsystemd(exec_start) == EXPECTED_ARGS
    assert values(service, "Restart") == ["on-failure"]
    assert values(service, "RestartSec") == ["10"]
    env = dict(v.partition("=")[::2] for v in values(service, "Environment"))
    assert not {"MLX_INTERP_MODEL", "MLX_INTERP_HOST", "MLX_INTERP_PORT"} & set(env)
    assert env["MLX_INTERP_CACHE"] == "/data/m"
    assert "MLX_INTERP_API_KEY" not in env and "k-123" not in text  # the key is in the private env file
    assert values(service, "EnvironmentFile") == [str(tmp_path / ".config/mlx-interp/service.env")]
    assert values(unit["Install"], "WantedBy") == ["default.target"]
    assert "mlx-interp" in values(unit["Unit"], "Description")[0]


def test_unit_quotes_awkward_arguments(tmp_path):
    odd = spec(python="/Users/Jo Smith/venv/bin/python", model="/models/50% $HOME \"x\"", vectors=(), probes=())
    (exec_start,) = values(parse_unit(systemd.render_unit(odd, tmp_path))["Service"], "ExecStart")
    assert unsystemd(exec_start)[0] == "/Users/Jo Smith/venv/bin/python"
    assert unsystemd(exec_start)[5] == "/models/50% $HOME \"x\""


def test_unit_log_files_option(tmp_path):
    service = parse_unit(systemd.render_unit(spec(), tmp_path, log_to_files=True))["Service"]
    log = tmp_path / ".local/state/mlx-interp/server.log"
    assert values(service, "StandardOutput") == [f"append:{log}"]
    assert "EnvironmentFile" not in dict(service)  # no key, no env file


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"host": "0.0.0.0"}, "without an API key"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"name": "Bad Name"}, "not allowed"),
        ({"api_key": "a\nb"}, "control character"),
        ({"extra_environment": (("MLX_INTERP_API_KEY", "x"),)}, "stored privately"),
        ({"extra_environment": (("1BAD", "x"),)}, "not a valid environment variable"),
        ({"python": "python3"}, "absolute path"),
    ],
)
def test_spec_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spec(**kwargs)


class FakeRunner:
    def __init__(self):
        self.calls = []

    def run(self, argv, check=True):
        self.calls.append(list(argv))


def test_install_with_injected_runner_and_private_files(tmp_path):
    runner = FakeRunner()
    install(spec(api_key="k-123"), "linux", tmp_path, runner)
    unit = tmp_path / ".config/systemd/user/mlx-interp.service"
    env_file = tmp_path / ".config/mlx-interp/service.env"
    assert unit.stat().st_mode & 0o777 == 0o644
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text().splitlines()[-1] == 'MLX_INTERP_API_KEY="k-123"'
    assert runner.calls == [["systemctl", "--user", "daemon-reload"],
                            ["systemctl", "--user", "enable", "--now", "mlx-interp.service"]]
    manifest = Manifest.load(tmp_path / ".local/state/mlx-interp/service-manifest.json")
    assert manifest.files == [str(unit), str(env_file)]
    assert "k-123" not in (tmp_path / ".local/state/mlx-interp/service-manifest.json").read_text()

    # reinstalled without a key: the env file goes, the running service is restarted
    runner.calls.clear()
    install(spec(), "linux", tmp_path, runner)
    assert not env_file.exists() and unit.exists()
    assert runner.calls[-1] == ["systemctl", "--user", "restart", "mlx-interp.service"]

    runner.calls.clear()
    uninstall("mlx-interp", "linux", tmp_path, runner)
    assert runner.calls == [["systemctl", "--user", "disable", "--now", "mlx-interp.service"],
                            ["systemctl", "--user", "daemon-reload"]]
    assert list(tmp_path.iterdir()) == []  # everything install created, folders included, is gone


def test_plans_are_the_same_steps_dry_run_prints(tmp_path):
    steps = plan_install(spec(api_key="sekret-key"), "macos", tmp_path)
    (plist,) = [s for s in steps if isinstance(s, WriteFile) and s.path.suffix == ".plist"]
    assert plist.mode == 0o600  # it holds the key
    assert plistlib.loads(plist.content)["EnvironmentVariables"]["MLX_INTERP_API_KEY"] == "sekret-key"
    assert "sekret-key" not in plist.shown and "********" in plist.shown
    commands = [s.argv for s in steps if isinstance(s, RunCommand)]
    uid = os.getuid()
    assert commands == [("launchctl", "bootout", f"gui/{uid}/com.mlx-interp.server"),
                        ("launchctl", "enable", f"gui/{uid}/com.mlx-interp.server"),
                        ("launchctl", "bootstrap", f"gui/{uid}", str(plist.path))]
    assert list(tmp_path.iterdir()) == []  # planning writes nothing
    with pytest.raises(ValueError, match="no service 'mlx-interp' installed"):
        plan_uninstall("mlx-interp", "macos", tmp_path)


def test_uninstall_ignores_manifest_entries_outside_home(tmp_path):
    home = tmp_path / "home"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    install(spec(), "linux", home, FakeRunner())
    manifest_path = home / ".local/state/mlx-interp/service-manifest.json"
    manifest = Manifest.load(manifest_path)
    manifest.files.append(str(outside))
    manifest_path.write_bytes(manifest.to_bytes())
    uninstall("mlx-interp", "linux", home, FakeRunner())
    assert outside.read_text() == "keep me"
    assert not Path(manifest.files[0]).exists()


def test_secret_looking_variables_are_stored_privately(tmp_path):
    private = spec(extra_environment=(("HF_TOKEN", "hf_abc"), ("MLX_INTERP_CACHE", "/m")))
    assert private.secrets() == {"HF_TOKEN": "hf_abc"}
    assert "HF_TOKEN" not in private.environment() and private.environment()["MLX_INTERP_CACHE"] == "/m"
    assert private.public_summary()["environment"] == {"HF_TOKEN": "set", "MLX_INTERP_CACHE": "/m"}
    files = {f.path.name: f for f in systemd.SystemdPlatform().files(private, tmp_path)}
    assert "hf_abc" not in files["mlx-interp.service"].content.decode()
    assert files["service.env"].mode == 0o600 and 'HF_TOKEN="hf_abc"' in files["service.env"].content.decode()
    assert "hf_abc" not in files["service.env"].shown
    (plist,) = launchd.LaunchdPlatform().files(private, tmp_path)
    assert plist.mode == 0o600 and plistlib.loads(plist.content)["EnvironmentVariables"]["HF_TOKEN"] == "hf_abc"


def test_stop_timeout_outlasts_the_servers_drain(tmp_path):
    """SIGTERM drains for --drain-s; the service manager must not SIGKILL before that (plus a margin) is over."""
    from mlx_interp.gateway.limits import Limits

    default = parse_unit(systemd.render_unit(spec(), tmp_path))["Service"]
    (stop,) = values(default, "TimeoutStopSec")
    assert int(stop) > Limits().drain_s
    longer = spec(extra_environment=(("MLX_INTERP_DRAIN_S", "300"),))
    (stop,) = values(parse_unit(systemd.render_unit(longer, tmp_path))["Service"], "TimeoutStopSec")
    assert int(stop) > 300
    assert launchd.plist_dict(longer, tmp_path)["ExitTimeOut"] > 300


def test_a_multi_rank_server_runs_the_launcher_and_lets_it_stop_the_ranks(tmp_path):
    two = spec(ranks=2, parallel="pipeline")
    assert two.program_arguments() == EXPECTED_ARGS + ["--ranks", "2", "--parallel", "pipeline"]
    unit = parse_unit(systemd.render_unit(two, tmp_path, log_to_files=False))
    assert values(unit["Service"], "KillMode") == ["mixed"]
    hosts = spec(hostfile="/etc/mlx/hosts.json")
    assert hosts.program_arguments() == EXPECTED_ARGS + ["--hostfile", "/etc/mlx/hosts.json"]
    assert spec().program_arguments() == EXPECTED_ARGS
    assert "KillMode" not in systemd.render_unit(spec(), tmp_path, log_to_files=False)
    plist = plistlib.loads(launchd.render_plist(two, tmp_path))
    assert plist["ProgramArguments"][-4:] == ["--ranks", "2", "--parallel", "pipeline"]
    with pytest.raises(ValueError, match="--hostfile must be an absolute path"):
        spec(hostfile="hosts.json")
