# Build a random-weight model with Qwen2.5-7B's layer shapes, 4-bit g64, as an mlx-lm model directory.
# usage: python3 servers_build_model.py OUT_DIR TOKENIZER_DIR   (tokenizer files are copied in: SmolLM2-135M-Instruct's)
import json
import shutil
import sys
import time

from pathlib import Path
import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import qwen2
from mlx_lm.utils import save_model

out, tok = Path(sys.argv[1]), Path(sys.argv[2])
t0 = time.time()
cfg = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=3584, num_hidden_layers=28,
           intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
           vocab_size=49152, rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=False,
           hidden_act="silu", torch_dtype="bfloat16", bos_token_id=1, eos_token_id=2)
mx.random.seed(0)
model = qwen2.Model(qwen2.ModelArgs.from_dict(cfg))
model.set_dtype(mx.bfloat16)
nn.quantize(model, group_size=64, bits=4)
mx.eval(model.parameters())
cfg["quantization"] = {"group_size": 64, "bits": 4}
cfg["quantization_config"] = {"group_size": 64, "bits": 4}
save_model(out, model)
(out / "config.json").write_text(json.dumps(cfg, indent=2))
for f in tok.iterdir():
    shutil.copy(f, out / f.name)
size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
print(f"built {out} in {time.time() - t0:.1f}s, weights {size / 1e9:.2f} GB, device {mx.default_device()}, mlx {mx.__version__}", flush=True)
