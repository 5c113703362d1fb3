#!/usr/bin/env bash
# One run of the benchmarks on a GPU machine, for this library on every backend that
# sees the GPU (keras-lmu 0.9.0 is not run: it needs TensorFlow's GPU build), and the
# float32 accuracy check of every way of computing the memory on that GPU.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          (default benchmarks/results/gpu)
#
# Writes to OUT_DIR: gpu.txt (the device, and its float32 matmul rate through
# PyTorch, with and without TF32), numerics-gpu-<backend>.json (benchmarks/numerics.py:
# each path's float32 memory against a float64 reference, the step-by-step
# `recurrent` path among them), bench-gpu.json, benchmarks-gpu.md and bench_long_gpu.png
# (benchmarks/bench.py); it prints the FFT convolution's training step and forward pass
# for several piece sizes (benchmarks/fft_pieces.py: the CPU's pieces, larger ones,
# one piece). Environment: PYTHON (default python3), BENCH_SECONDS (time limit of
# bench.py, default 330; its JSON is written after each case, the parallel cases first),
# NUMERICS_SECONDS and PIECES_SECONDS (per backend, default 75 and 40).
set -u
out=${1:-benchmarks/results/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX takes 75% of the GPU's memory at its start by default; the benchmark runs a JAX
# and a PyTorch process side by side.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$python" - <<'EOF'
import time

import torch

if torch.cuda.is_available():
    a = torch.randn(8192, 8192, device="cuda")
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for _ in range(3):
            a @ a
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / 10
        print(f"float32 matmul 8192^3 (torch {torch.__version__}, allow_tf32={tf32}): "
              f"{2 * 8192**3 / seconds / 1e12:.1f} TFLOP/s")
EOF
} >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

backends=()
for backend in jax torch tensorflow; do
    if KERAS_BACKEND=$backend "$python" -c "
import sys
sys.path.insert(0, 'benchmarks')
from parallel import accelerator
sys.exit(0 if accelerator() else 1)" 2>/dev/null; then
        backends+=("$backend")
    fi
done
echo "backends on the GPU: ${backends[*]:-none}"
[ ${#backends[@]} -gt 0 ] || exit 1

for backend in "${backends[@]}"; do
    timeout "${NUMERICS_SECONDS:-75}" "$python" benchmarks/numerics.py --backend "$backend" \
        --orders 64 256 --thetas 1000 10000 --steps 1000 10000 --discretizers zoh \
        --cache /tmp/keras-lmu-numerics-cache --out "$out/numerics-gpu-$backend.json" |
        sed -n '/worst relative error/,$p'
done

for backend in "${backends[@]}"; do
    timeout "${PIECES_SECONDS:-40}" "$python" benchmarks/fft_pieces.py --backend "$backend" \
        --repeats 5 --piece-values $((1 << 19)) $((1 << 22)) $((1 << 24)) $((1 << 62))
done

timeout "${BENCH_SECONDS:-330}" "$python" benchmarks/bench.py --no-peer \
    --backends "${backends[@]}" --repeats 5 --budget 1 \
    --cases seq-ff-full seq-lmu-full seq-ff-fft seq-ff-raw seq-lmu psmnist-ff \
    trainable-theta lstm psmnist-rnn seq-rnn long \
    --out "$out/bench-gpu.json" --report "$out/benchmarks-gpu.md" \
    --plot "$out/bench_long_gpu.png"
