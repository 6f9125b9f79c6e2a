"""`mlx-interp vectors …`, `capture`, `generate`, run in-process on a tiny model."""

import json

import numpy as np
import pytest

from mlx_interp.cli import main
from mlx_interp.steering.vectors import SteeringVector

PAIRS = [
    {"positive": "I adore the colour red.", "negative": "I adore the colour blue."},
    {"positive": "Paint it red.", "negative": "Paint it blue."},
    {"positive": "A red car drove by.", "negative": "A blue car drove by."},
]


def error_lines(stderr: str) -> list[str]:
    """The dispatcher's error lines (progress lines such as 'loading model' are not errors)."""
    return [line for line in stderr.splitlines() if ": error: " in line]


@pytest.fixture(scope="module")
def built(tiny_model_dirs, tmp_path_factory):
    """A vector built through the CLI once for the module: (model dir, vector dir)."""
    root = tmp_path_factory.mktemp("cli")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    out = root / "vectors"
    model = str(tiny_model_dirs["llama"])
    rc = main(["vectors", "build", "--pairs", str(pairs), "--name", "red", "--model", model, "--out", str(out), "--description", "red not blue"])
    assert rc == 0
    return model, out


@pytest.mark.parametrize(
    "argv",
    [
        ["vectors", "build"],
        ["vectors", "list"],
        ["vectors", "show"],
        ["vectors", "import-gguf"],
        ["vectors", "export-gguf"],
        ["capture"],
        ["generate"],
    ],
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--help"])
    assert exit_info.value.code == 0
    assert f"usage: mlx-interp {' '.join(argv)}" in capsys.readouterr().out


def test_build_writes_a_loadable_vector(built, capsys):
    _, out = built
    vector = SteeringVector.load(out / "red.json")
    assert vector.description == "red not blue" and vector.metadata["method"] == "mean_diff"
    assert vector.metadata["extra"]["num_pairs"] == 3


def test_list_and_show(built, capsys):
    _, out = built
    assert main(["vectors", "list", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "red" in listing and "red not blue" in listing
    assert main(["vectors", "list", str(out), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["name"] == "red"
    assert main(["vectors", "show", str(out / "red")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sha256"] == SteeringVector.load(out / "red.json").sha256


def test_list_reports_broken_files(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{")
    assert main(["vectors", "list", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "no vectors" in captured.out and "bad.json" in captured.err


def test_list_without_a_directory_shows_the_shipped_vector(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLX_INTERP_HOME", str(tmp_path / "empty-home"))  # no user library yet
    assert main(["vectors", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:4] == ["NAME", "LAYERS", "ALPHA", "METHOD"]
    assert any(row.split()[0] == "green_red" for row in rows[1:])


def test_gguf_export_import_round_trip(built, tmp_path, capsys):
    model, out = built
    gguf = tmp_path / "red.gguf"
    assert main(["vectors", "export-gguf", str(out / "red.json"), str(gguf), "--layers", "all"]) == 0
    assert main(["vectors", "import-gguf", str(gguf), "--name", "red_back", "--model", model, "--out", str(tmp_path)]) == 0
    original = SteeringVector.load(out / "red.json")
    back = SteeringVector.load(tmp_path / "red_back.json")
    np.testing.assert_array_equal(back.directions[1:], original.directions[1:])
    assert back.metadata["model_fingerprint"] == original.metadata["model_fingerprint"]


def test_capture(built, tmp_path, capsys):
    from tiny_models import HIDDEN, LAYERS

    model, _ = built
    texts = tmp_path / "texts.txt"
    texts.write_text("third text\n\nfourth\n")
    out = tmp_path / "states.npy"
    assert main(["capture", "--model", model, "--text", "hello", "--text", "world!", "--file", str(texts), "--out", str(out)]) == 0
    assert np.load(out).shape == (4, LAYERS, HIDDEN)
    assert main(["capture", "--model", model, "--text", "hello", "--layers", "1-2", "--position", "mean", "--out", str(out)]) == 0
    assert np.load(out).shape == (1, 2, HIDDEN)
    # every token, different lengths: only .npz can hold them
    assert main(["capture", "--model", model, "--text", "a", "--text", "abc", "--position", "all", "--out", str(out)]) == 2
    assert "npz" in capsys.readouterr().err
    npz = tmp_path / "states.npz"
    assert main(["capture", "--model", model, "--text", "a", "--text", "abc", "--position", "all", "--out", str(npz)]) == 0
    with np.load(npz) as data:
        assert data["text_0"].shape == (LAYERS, 1, HIDDEN) and data["text_1"].shape == (LAYERS, 3, HIDDEN)


def test_capture_jsonl_file(built, tmp_path):
    model, _ = built
    texts = tmp_path / "texts.jsonl"
    texts.write_text('"plain string"\n{"text": "object"}\n')
    out = tmp_path / "s.npy"
    assert main(["capture", "--model", model, "--file", str(texts), "--out", str(out)]) == 0
    assert np.load(out).shape[0] == 2


def test_generate_steered_differs(built, capsys):
    model, out = built
    base = ["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "8", "--vectors", str(out)]
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert main(base + ["--steer", "red=40"]) == 0
    captured = capsys.readouterr()
    assert captured.out != plain
    assert "steered: red alpha=40" in captured.err


def test_generate_unknown_vector_is_a_one_line_error(built, capsys):
    model, out = built
    rc = main(["generate", "--model", model, "--prompt", "Hi", "--steer", "green=1", "--vectors", str(out), "--max-tokens", "2"])
    assert rc == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "unknown vector 'green'" in line and "available for this model: red" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--prompt", "x", "--steer", "red=lots"], "'lots' is not a number"),
        (["vectors", "build", "--pairs", "/nonexistent/pairs.jsonl", "--name", "x"], "pairs file not found"),
        (["vectors", "show", "/nonexistent/vec"], "vector not found"),
        (["vectors", "list", "/nonexistent/dir"], "not found"),
        (["capture", "--text", "x", "--out", "x.txt"], ".npy or .npz"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert message in line


def test_default_directory_is_the_users_library(built, tmp_path, monkeypatch, capsys):
    """build without --out writes into $MLX_INTERP_HOME (never the package), where generate, list and show look."""
    from mlx_interp import paths

    model, _ = built
    monkeypatch.setenv("MLX_INTERP_HOME", str(tmp_path / "home"))
    before = sorted(p.name for p in paths.SHIPPED_VECTORS.iterdir())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    assert main(["vectors", "build", "--pairs", str(pairs), "--name", "mine", "--model", model]) == 0
    assert (tmp_path / "home" / "library" / "vectors" / "mine.json").exists()
    assert sorted(p.name for p in paths.SHIPPED_VECTORS.iterdir()) == before
    capsys.readouterr()
    assert main(["vectors", "list"]) == 0
    listed = capsys.readouterr().out
    assert "mine" in listed and "green_red" in listed  # the user's and the shipped library
    assert main(["vectors", "show", "mine"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "mine"
    assert main(["generate", "--model", model, "--prompt", "Hi", "--steer", "mine", "--max-tokens", "2"]) == 0
    assert "steered: mine" in capsys.readouterr().err
