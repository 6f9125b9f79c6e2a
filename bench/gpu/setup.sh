#!/bin/bash
# On the GPU machine, from the repository root: install mlx's CUDA build and the server's missing
# dependencies offline into /root/pkgs, install this checkout there, and build the random-weight
# 7B-shape model. Expects /root/stash/part_aa + /root/stash/tok (copied by an earlier call) and the
# rest under .gpu/b (carried). See bench/README.md, "GPU".
set -e
W=/root/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
if [ ! -f /root/pkgs/.done ]; then
  cat /root/stash/part_aa .gpu/b/part_ab .gpu/b/part_ac > $W
  echo "$(cut -d' ' -f1 .gpu/b/cuda.sha256)  $W" | sha256sum -c
  python3 -m pip install -q --no-deps --no-index --target /root/pkgs $W .gpu/b/*.whl 2>&1 | grep -v WARNING || true
  touch /root/pkgs/.done
fi
export PYTHONPATH=/root/pkgs
rm -rf /root/src && mkdir -p /root/src && cp -a . /root/src/main 2>/dev/null; rm -rf /root/src/main/.gpu
python3 -m pip install -q --no-deps --no-index --no-build-isolation --target /root/interp /root/src/main 2>&1 | grep -v WARNING || true
python3 -c "import mlx.core as mx, mlx_lm; print('device', mx.default_device(), 'mlx', mx.__version__, 'mlx_lm', mlx_lm.__version__)"
[ -f /root/model/config.json ] || python3 bench/gpu/build_model.py /root/model /root/stash/tok
echo "setup done at ${SECONDS}s"
