"""The pieces of serve --ranks that need no second process: layer split, launcher arguments, and the
control plane replayed in one process (rank 0's ReplicatedBatch recording what a follower runs)."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_interp.gateway.rank_launch import rank_argv
from mlx_interp.gateway.ranks import Follower, RankSet, RankInfo
from mlx_interp.steering.sharding import pipeline_split, tensor_split_problem


@pytest.mark.parametrize("layers,size", [(30, 2), (30, 4), (7, 3), (4, 4)])
def test_pipeline_split_is_mlx_lm_s(layers, size):
    from mlx_lm.models.pipeline import PipelineMixin

    class Group:
        def __init__(self, r):
            self.r = r

        def rank(self):
            return self.r

        def size(self):
            return size

    covered = []
    for r in range(size):
        m = PipelineMixin()
        m.layers = list(range(layers))
        m.pipeline(Group(r))
        assert pipeline_split(layers, size, r) == (m.start_idx, m.end_idx)
        covered += list(range(m.start_idx, m.end_idx))
    assert sorted(covered) == list(range(layers))
    assert pipeline_split(layers, size, 0)[1] == layers  # rank 0 holds the last layers


def test_tensor_split_needs_divisible_heads():
    class Args:
        num_attention_heads, num_key_value_heads, intermediate_size, hidden_size = 9, 3, 1536, 576

    class Model:
        args = Args()

        def shard(self, group):
            pass

    assert "num_attention_heads 9" in tensor_split_problem(Model(), 2)
    assert tensor_split_problem(Model(), 3) is None
    assert "no shard" in tensor_split_problem(object(), 2)


def test_rank_argv_drops_the_launcher_s_flags():
    argv = ["mlx-interp", "serve", "--model", "m", "--ranks", "2", "--ring-port=30000", "--hostfile", "h.json", "--parallel", "pipeline"]
    assert rank_argv(argv) == ["--model", "m", "--parallel", "pipeline"]


class RecordingLink:
    """Stands in for mx.distributed: keeps what rank 0 sent; a Follower then reads it back in order."""

    rank, size = 0, 2

    def __init__(self):
        self.sent = []

    def send(self, obj):
        self.sent.append(obj)

    def recv(self):
        return self.sent.pop(0)


def test_a_follower_replaying_rank_0_s_operations_holds_the_same_batch(tiny_llama):
    """Prompts, rows joining with their steering, a decode step, new steering, a row leaving: the follower
    (same weights, unsharded) ends with the same rows and computes the same logits as rank 0."""
    import mlx.core as mx

    from mlx_interp.steering.generation import steering_session
    from mlx_interp.steering.interventions import Intervention

    L, D = tiny_llama.num_layers, tiny_llama.hidden_size
    rng = np.random.default_rng(0)
    iv = Intervention("v", rng.standard_normal((L, D)).astype(np.float32), alpha=4.0, layers=(1, 2))
    link = RecordingLink()
    ranks = RankSet(link, [RankInfo(0, "h", 1, "f", {}), RankInfo(1, "h", 2, "f", {})], tiny_llama, timeout_s=0)

    with steering_session(tiny_llama) as local:
        with ranks.session(local) as rb:
            pre_a = rb.prefill([1, 2, 3, 4], (iv,))
            rb.add("a", pre_a, (iv,))
            task = rb.start_prefill([5, 6, 7], chunk=2)
            while (pre_b := task.advance()) is None:
                pass
            rb.add("b", pre_b)
            logits0, _ = rb.step([9, 10], capture=False)
            assert ranks.watchdog._since is not None  # waiting on the step's outputs
            rb.set_interventions("b", (iv,))
            rb.remove(["a"])
            assert ranks.watchdog._since is None  # nothing outstanding: an idle server is not a hung rank
            logits1, _ = rb.step([11], capture=False)
            mx.eval(logits0, logits1)
            rb.settle()
        sent = list(link.sent)
    assert [op[0] for _, op in sent] == ["start", "advance", "add", "start", "advance", "advance", "add", "step", "set", "remove",
                                         "step", "stop"]

    with steering_session(tiny_llama) as other:
        follower = Follower(other, link, None)
        outs = []
        real_step = other.step

        def step(tokens, capture=True):
            out = real_step(tokens, capture)
            outs.append(out[0])
            return out

        other.step = step
        follower.run()
        assert len(other) == 1 and [i.name for i in other.rows[0].interventions] == ["v"]
    assert np.allclose(np.array(outs[0]), np.array(logits0), atol=1e-5)
    assert np.allclose(np.array(outs[1]), np.array(logits1), atol=1e-5)
