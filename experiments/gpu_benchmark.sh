#!/usr/bin/env bash
# On a fresh machine with an NVIDIA GPU, from the repository root: installs JAX with CUDA (this project
# in a venv) and torch + timm (another venv) side by side, then runs experiments/gpu_benchmark.py
# (bfloat16 ViT-B/16 training, ours against timm with torch.compile + AMP) and writes
# experiments/results/benchmark_gpu.{md,json}. About 10 minutes with a fast package mirror.
#   bash experiments/gpu_benchmark.sh [gpu_benchmark.py flags, e.g. --batch_size=128]
# VENVS (default /tmp/tokenlearner_gpu) holds the two venvs; existing ones are reused.
set -euo pipefail
VENVS=${VENVS:-/tmp/tokenlearner_gpu}
JAX_VERSION=${JAX_VERSION:-0.10.2}  # the version this project is tested with
mkdir -p "$VENVS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

install_jax() {
  test -x "$VENVS/jax/bin/python" && return
  python3 -m venv "$VENVS/jax"
  "$VENVS/jax/bin/pip" install -q -e . "jax[cuda12]==$JAX_VERSION"
}
install_timm() {
  test -x "$VENVS/timm/bin/python" && return
  python3 -m venv "$VENVS/timm"
  "$VENVS/timm/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 timm==1.0.31 safetensors
}
install_jax > "$VENVS/install_jax.log" 2>&1 &
jax_pid=$!
install_timm > "$VENVS/install_timm.log" 2>&1 &
timm_pid=$!
wait $jax_pid || { tail -20 "$VENVS/install_jax.log"; exit 1; }
wait $timm_pid || { tail -20 "$VENVS/install_timm.log"; exit 1; }
"$VENVS/jax/bin/python" -c "import jax; print(jax.devices())"
exec "$VENVS/jax/bin/python" experiments/gpu_benchmark.py --timm_python="$VENVS/timm/bin/python" "$@"
