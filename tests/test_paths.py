"""One place for paths: the user's data directory follows MLX_INTERP_HOME; the package is never written."""

from __future__ import annotations

from pathlib import Path

from mlx_interp import paths


def test_home_follows_mlx_interp_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("MLX_INTERP_HOME", raising=False)
    monkeypatch.delenv("MLX_INTERP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.home() == tmp_path / "xdg" / "mlx-interp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.home() == Path.home() / ".cache" / "mlx-interp"  # contract section 9's default
    monkeypatch.setenv("MLX_INTERP_HOME", str(tmp_path / "home"))
    assert paths.home() == tmp_path / "home"
    assert paths.user_vectors() == tmp_path / "home" / "library" / "vectors"
    assert paths.user_probes() == tmp_path / "home" / "library" / "probes"
    assert paths.model_cache() == tmp_path / "home"
    monkeypatch.setenv("MLX_INTERP_CACHE", str(tmp_path / "models"))
    assert paths.model_cache() == tmp_path / "models"
    assert paths.home() == tmp_path / "home"  # the model cache moves alone


def test_shipped_paths_are_the_installed_packages():
    import mlx_interp.experiments
    import mlx_interp.probes
    import mlx_interp.steering

    assert paths.SHIPPED_VECTORS == Path(mlx_interp.steering.__file__).resolve().parent / "library"
    assert paths.SHIPPED_PROBES == Path(mlx_interp.probes.__file__).resolve().parent / "library"
    assert (paths.SHIPPED_VECTORS / "green_red.json").is_file()
    assert (paths.SHIPPED_PROBES / "sycophancy.json").is_file()
    assert (paths.STEERING_DATA / "green_red.jsonl").is_file()
    assert (paths.EXPERIMENT_DATA / "colour_questions.jsonl").is_file()


def test_server_uploads_go_to_the_users_library(monkeypatch, tmp_path, tiny_llama):
    from mlx_interp.gateway.catalog import build_shelves

    monkeypatch.setenv("MLX_INTERP_HOME", str(tmp_path / "home"))
    vectors, probes = build_shelves(tiny_llama, [], [])
    assert vectors.writable.root == tmp_path / "home" / "library" / "vectors"
    assert probes.writable.root == tmp_path / "home" / "library" / "probes"
    assert vectors.libraries[-1].root == paths.SHIPPED_VECTORS  # read-only, looked up last
    # a --vectors directory takes the uploads instead
    vectors, _ = build_shelves(tiny_llama, [str(tmp_path / "mine")], [])
    assert vectors.writable.root == tmp_path / "mine"
