"""`mlx-interp probes ...` in-process on a tiny model."""

import json

import pytest

from mlx_interp.cli import main
from mlx_interp.probes.probe import Probe

FOOD = ["bread and butter", "a bowl of soup", "fresh pasta", "grilled fish", "apple pie", "rice with beans"]
WEATHER = ["heavy rain today", "a cold wind", "sunny and warm", "snow on the hills", "thunder at night", "fog at dawn"]


@pytest.fixture
def labelled(tmp_path):
    rows = []
    for i, (f, w) in enumerate(zip(FOOD, WEATHER)):
        rows.append({"text": f"We talked about {f}.", "label": "food", "group": i})
        rows.append({"text": f"We talked about {w}.", "label": "weather", "group": i})
    rows.append({"messages": [{"role": "user", "content": "dinner?"}, {"role": "assistant", "content": "soup"}],
                 "label": "food", "group": 99})
    rows.append({"messages": [{"role": "user", "content": "forecast?"}], "label": "weather", "group": 99})
    path = tmp_path / "topics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_list_show_score(tmp_path, tiny_model_dirs, tiny_llama, labelled, capsys):
    model = str(tiny_model_dirs["llama"])
    out = tmp_path / "lib"
    rc = main(["probes", "train", "--data", str(labelled), "--name", "topic", "--model", model, "--out", str(out),
               "--positive-label", "food", "--folds", "3", "--fpr", "0.1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "best layer" in text and "saved" in text and "'weather' (0) / 'food' (1)" in text
    table = [l for l in text.splitlines() if l.strip()[:1].isdigit()]
    assert len(table) == 4  # one row per layer of the tiny model

    probe = Probe.load(out / "topic.json", fingerprint=tiny_llama.fingerprint, hidden_size=64, num_layers=4)
    assert probe.labels == ["weather", "food"] and probe.metadata["n_examples"] == 14
    assert probe.metadata["folds"] == 3 and probe.metadata["threshold_fpr"] == 0.1
    assert probe.metadata["model_fingerprint"] == tiny_llama.fingerprint and probe.layers == (0, 1, 2, 3)

    assert main(["probes", "list", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "topic" in listing and "weather/food" in listing

    assert main(["probes", "show", str(out / "topic.safetensors")]) == 0
    shown = capsys.readouterr().out
    assert probe.sha256 in shown and "shuf AUROC" in shown

    assert main(["probes", "score", "--probe", str(out / "topic.json"), "--text", "soup again", "--model", model]) == 0
    scored = capsys.readouterr().out
    rows = [l.split() for l in scored.splitlines() if l.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[1:3])
    assert "flagged:" in scored and sum("<- best" in l for l in scored.splitlines()) == 1


def test_diff_means_and_token_position(tmp_path, tiny_model_dirs, labelled, capsys):
    out = tmp_path / "lib"
    answered = tmp_path / "answered.jsonl"  # a token probe needs an answer in every row
    rows = [json.loads(l) for l in labelled.read_text().splitlines()]
    answered.write_text("".join(json.dumps(r) + "\n" for r in rows if "messages" not in r or len(r["messages"]) == 2))
    rc = main(["probes", "train", "--data", str(answered), "--name", "dm", "--model", str(tiny_model_dirs["llama"]),
               "--out", str(out), "--method", "diff_means", "--position", "token", "--folds", "2",
               "--layers", "1-2", "--aggregation", "ema", "--ema-window", "3"])
    assert rc == 0
    probe = Probe.load(out / "dm.json")
    assert probe.metadata["method"] == "diff_means" and probe.position == "token" and probe.per_token
    assert probe.layers == (1, 2) and probe.metadata["selection"]["band_declared_before_looking"] is True
    assert probe.aggregation == "ema" and probe.ema_window == 3
    assert probe.threshold == probe.metadata["aggregate_thresholds"]["ema"]
    assert probe.metadata["n_examples"] > probe.metadata["n_responses"]  # one row per token
    assert probe.labels == ["food", "weather"]  # string labels without --positive-label: later in sorted order


def test_train_without_out_goes_to_the_users_library_never_the_package(tmp_path, tiny_model_dirs, labelled, monkeypatch, capsys):
    from mlx_interp import paths

    monkeypatch.setenv("MLX_INTERP_HOME", str(tmp_path / "home"))
    shipped_before = sorted(p.name for p in paths.SHIPPED_PROBES.iterdir())
    rc = main(["probes", "train", "--data", str(labelled), "--name", "mine", "--model", str(tiny_model_dirs["llama"]),
               "--positive-label", "food", "--folds", "2"])
    assert rc == 0
    assert Probe.load(tmp_path / "home" / "library" / "probes" / "mine.json").name == "mine"
    assert sorted(p.name for p in paths.SHIPPED_PROBES.iterdir()) == shipped_before
    capsys.readouterr()
    assert main(["probes", "list"]) == 0
    listed = capsys.readouterr().out
    assert "mine" in listed and "sycophancy" in listed  # the user's library and the shipped one
    assert main(["probes", "show", "mine"]) == 0
    assert "mine" in capsys.readouterr().out


def test_chat_rows_use_the_template(tiny_llama):
    from mlx_interp.probes.training import row_tokens

    decode = tiny_llama.tokenizer.decode
    ended = row_tokens(tiny_llama, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    open_ = row_tokens(tiny_llama, {"messages": [{"role": "user", "content": "a"}]})
    assert decode(ended).endswith("b<|im_end|>\n")
    assert decode(open_).endswith("<|im_start|>assistant\n")
    assert decode(row_tokens(tiny_llama, {"text": "plain"})) == "plain"


@pytest.mark.parametrize(
    "argv,match",
    [
        (["probes", "train", "--data", "/nonexistent.jsonl", "--name", "x"], "not found"),
        (["probes", "train", "--data", "{data}", "--name", "../bad"], "not allowed"),
        (["probes", "show", "/nonexistent/probe.json"], "probe not found"),
        (["probes", "list", "/nonexistent/folder"], "not found"),
        (["probes", "score", "--probe", "nothing-here", "--text", "x"], "probe not found"),
    ],
)
def test_user_errors_are_one_line(argv, match, labelled, capsys):
    argv = [a.replace("{data}", str(labelled)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


def test_train_refuses_bad_rows_naming_the_line(tmp_path, tiny_model_dirs, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    rc = main(["probes", "train", "--data", str(data), "--name", "x", "--model", str(tiny_model_dirs["llama"]),
               "--out", str(tmp_path)])
    assert rc == 2 and f"{data}:2: missing 'label'" in capsys.readouterr().err


def test_list_empty_folder_and_refused_files(tmp_path, make_probe, capsys):
    assert main(["probes", "list", str(tmp_path)]) == 0
    assert "no probes in" in capsys.readouterr().out
    make_probe(name="ok").save(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    assert main(["probes", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "refused" in out and "broken.json" in out


def test_default_library_lists_the_shipped_probe(capsys):
    assert main(["probes", "list"]) == 0
    assert "sycophancy" in capsys.readouterr().out
