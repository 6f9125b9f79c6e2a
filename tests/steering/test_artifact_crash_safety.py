"""A vector or probe replaced while its writer is killed is the old one or the new one, never a mix.

The writer runs in a subprocess that replaces one vector over and over, each
version with its number in both the directions and the metadata; the test
kills it with SIGKILL at a random moment, many times, and after each kill
checks what a fresh library loads.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mlx_interp.steering.artifacts import ArtifactError, PREVIOUS_SUFFIX, commit_pair, read_json
from mlx_interp.steering.vectors import SteeringVector, VectorLibrary, build_metadata

LAYERS, HIDDEN = 48, 2048  # ~400 KB of directions: writes take long enough for kills to land inside them

WRITER = textwrap.dedent(
    f"""
    import sys, numpy as np
    from mlx_interp.steering.vectors import SteeringVector, build_metadata
    root = sys.argv[1]
    version = 0
    print("ready", flush=True)
    while True:
        version += 1
        meta = build_metadata("v", hidden_size={HIDDEN}, num_layers={LAYERS}, method="test",
                              recommended_layers=[0], description=f"version {{version}}")
        SteeringVector("v", np.full(({LAYERS}, {HIDDEN}), float(version), np.float32), meta).save(root)
    """
)


def _version_of(vector: SteeringVector) -> tuple[int, int]:
    meta_version = int(vector.metadata["description"].split()[1])
    values = np.unique(vector.directions)
    assert len(values) == 1, f"directions mix versions {values[:5]}"
    return meta_version, int(values[0])


@pytest.mark.parametrize("seed", [0])
def test_kill_9_while_replacing_leaves_old_or_new_whole(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "lib"
    root.mkdir()
    kills = 0
    mixed_on_disk = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if (root / ("v.safetensors" + PREVIOUS_SUFFIX)).exists():
            mixed_on_disk += 1  # killed between the two renames: recovery has work to do
        lib = VectorLibrary(root)
        errors = lib.load_all(sweep=True)
        assert errors == [], errors
        if "v" in lib:
            meta_version, tensor_version = _version_of(lib.get("v"))
            assert meta_version == tensor_version
        assert not list(root.glob(".*.tmp")), "leftover temporary files were not swept"
        assert not list(root.glob("*" + PREVIOUS_SUFFIX))
    assert kills == 12


def test_recovery_restores_the_old_tensors_when_the_new_json_never_arrived(tmp_path):
    """The exact window the fault test aims at, made deterministic: new tensors in place, old JSON, .prev kept."""
    meta = build_metadata("v", hidden_size=4, num_layers=2, method="test", recommended_layers=[0], description="version 1")
    SteeringVector("v", np.full((2, 4), 1.0, np.float32), meta).save(tmp_path)
    tensor, js = tmp_path / "v.safetensors", tmp_path / "v.json"
    os.link(tensor, tmp_path / ("v.safetensors" + PREVIOUS_SUFFIX))
    from safetensors.numpy import save

    new = tmp_path / "new.bin"
    new.write_bytes(save({"directions": np.full((2, 4), 2.0, np.float32)}))
    os.replace(new, tensor)  # the new tensors renamed in (a new inode, as atomic_write does), the JSON still old
    with pytest.raises(ArtifactError, match="not written together"):
        SteeringVector.load(js)
    lib = VectorLibrary(tmp_path)
    assert lib.load_all(sweep=True) == []
    assert _version_of(lib.get("v")) == (1, 1)


def test_commit_pair_records_the_tensor_hash_and_a_mismatch_is_refused(tmp_path):
    meta = commit_pair(tmp_path / "a.safetensors", b"one", tmp_path / "a.json", {"name": "a"})
    assert read_json(tmp_path / "a.json")["tensors_sha256"] == meta["tensors_sha256"]
    (tmp_path / "a.safetensors").write_bytes(b"two")
    from mlx_interp.steering.artifacts import check_pair

    with pytest.raises(ArtifactError, match="not written together"):
        check_pair(tmp_path / "a.json", meta, tmp_path / "a.safetensors", b"two")
