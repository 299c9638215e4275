#!/usr/bin/env bash
# The one GPU check (under 5 minutes on an H200): build the extension on the GPU machine
# (offline: its torch, triton and test packages are already installed), run the whole test
# suite with the CUDA tests enabled, print the static SASS report, then cross-check
# CUDA == Triton == CPU bit for bit and benchmark against torch's normal_ and fill_.
# Everything it prints also goes to $OUT (or ./gpu_check_out) for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
status=0

echo "=== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  export CUDA_HOME=$(cd "$CUDA_HOME" && pwd -P)
fi
echo "CUDA_HOME=${CUDA_HOME:-unset}; $($PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)')"

echo "=== build"
export MAX_JOBS=${MAX_JOBS:-16}
start=$(date +%s)
$PY -m pip install -q --no-deps --no-build-isolation -e . || { echo "BUILD FAILED"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
$PY -c "import fusedinit; print('backends', fusedinit.available_backends())"

echo "=== tests (CUDA tests enabled)"
timeout 240 $PY -m pytest -q -p no:cacheprovider -x -m "not slow" tests/ || status=1

echo "=== static report"
timeout 120 $PY benchmarks/sass_report.py || status=1

echo "=== cross-check and benchmark"
timeout 300 $PY benchmarks/gpu_bench.py --json "$OUT/gpu_bench.json" || status=1
echo "=== gpu_check exit status $status"
exit $status
