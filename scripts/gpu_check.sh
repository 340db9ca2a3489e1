#!/usr/bin/env bash
# The GPU checks, as one script for a machine with an NVIDIA GPU and CuPy installed.
# It installs nothing: nanotie is put on PYTHONPATH, and the machine's own numpy, scipy,
# cupy, pytest and torch are used. Logs go to $OUT (or ./gpu-logs).
#   1. the whole test suite (device-parametrized tests run their CUDA cases);
#   2. the device tests again with NANOTIE_DEVICE=cuda (new tensors default to the GPU);
#   3. the op benchmark on CuPy against PyTorch CUDA;
#   4. the GPT training-step benchmark on CuPy against PyTorch CUDA (NumPy without it);
#   5. the `gpt` experiment's quick profile on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-logs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py="${PYTHON:-python3}"
status=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import sys, numpy, cupy; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)"
  "$py" -c "import nanotie; print('nanotie sees a GPU:', nanotie.cuda_available())"
} 2>&1 | tee "$out/env.txt"

echo "== 1. test suite (CUDA cases on) =="
# -n 0: one process, not one worker per core, each with the GPU.
"$py" -m pytest -q -n 0 -p no:cacheprovider -rs "$@" 2>&1 | tee "$out/pytest.txt" || status=1
echo "== 2. device tests with NANOTIE_DEVICE=cuda =="
NANOTIE_DEVICE=cuda "$py" -m pytest -q -n 0 -p no:cacheprovider -m gpu -rs 2>&1 \
  | tee "$out/pytest_cuda_default.txt" || status=1
echo "== 3. op benchmark on the GPU =="
if [ -f benchmarks/bench_ops.py ]; then
  "$py" benchmarks/bench_ops.py --device cuda --json "$out/bench_ops_cuda.json" 2>&1 \
    | tee "$out/bench_ops_cuda.txt" || status=1
fi
echo "== 4. training-step benchmark on the GPU =="
if [ -f benchmarks/bench_train_step.py ]; then
  "$py" benchmarks/bench_train_step.py --device cuda --json "$out/bench_train_step_cuda.json" \
    2>&1 | tee "$out/bench_train_step_cuda.txt" || status=1
fi
echo "== 5. the gpt experiment (quick) on the GPU =="
"$py" -m nanotie reproduce gpt --device cuda --out "$out/runs" 2>&1 \
  | tee "$out/reproduce_gpt_cuda.txt" || status=1
exit $status
