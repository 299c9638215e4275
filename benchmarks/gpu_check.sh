#!/usr/bin/env bash
# The one GPU check, under 5 minutes on an H200 (offline: torch, triton and the test packages
# are already installed there). In order, so that the GPU's results come first and a failure
# elsewhere cannot skip them:
#   1. the device (name, capability, clocks) and the build of the extension on that machine
#   2. the GPU tests (tests/test_gpu.py), without -x
#   3. cross-check CUDA == Triton == CPU bit for bit and benchmark against normal_ and fill_
#   4. optionally, one ncu pass (2^28 float32 / bfloat16) for shared-memory wavefronts
#   5. the rest of the test suite, in the time left
# Everything it prints also goes to $OUT (or ./gpu_check_out) for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-285}  # the whole script, seconds
START=$(date +%s)
status=0

left() {  # seconds left of the budget, at most $1
  local rest=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$rest" -gt "$1" ]; then echo "$1"; elif [ "$rest" -gt 5 ]; then echo "$rest"; else echo 5; fi
}
step() { echo; echo "=== [$(( $(date +%s) - START )) s] $*"; }

step "device"
nvidia-smi --query-gpu=name,compute_cap,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,driver_version \
  --format=csv 2>/dev/null || echo "nvidia-smi: not available"
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  CUDA_HOME=$(cd "$CUDA_HOME" && pwd -P)
  export CUDA_HOME
fi
echo "CUDA_HOME=${CUDA_HOME:-unset}"
$PY -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__); print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(), "SMs", torch.cuda.get_device_properties(0).multi_processor_count)'

step "build"
export MAX_JOBS=${MAX_JOBS:-16}
t0=$(date +%s)
timeout "$(left 170)" $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . \
  || { echo "BUILD FAILED"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
$PY -c 'import fusedinit, torch; from fusedinit.ops import op, cuda_arch; print("backends", fusedinit.available_backends(), "| CUDA kernels present:", op.has_kernel("cuda"), "| they run on this GPU:", op.has_kernel("cuda") and cuda_arch.cuda_kernels_run_on(torch.device("cuda")))'

step "GPU tests"
timeout "$(left 60)" $PY -m pytest -q -p no:cacheprovider -rfEs tests/test_gpu.py || status=1

step "cross-check and benchmark"
timeout "$(left 110)" $PY benchmarks/gpu_bench.py --check-max-log2 28 --json "$OUT/gpu_bench.json" || status=1

if command -v ncu >/dev/null 2>&1 && [ "$(left 60)" -ge 40 ]; then
  step "ncu: shared-memory wavefronts and instructions of the CUDA kernel, 2^28 values"
  timeout "$(left 40)" ncu --target-processes all -k regex:init_kernel --metrics \
    smsp__inst_executed.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,gpu__time_duration.sum \
    $PY -c 'import torch, fusedinit
for dt in (torch.float32, torch.bfloat16):
    t = torch.empty(1 << 28, dtype=dt, device="cuda")
    fusedinit.normal_(t, seed=1, backend="cuda"); torch.cuda.synchronize(); print(dt, "done")' \
    || echo "ncu pass failed or timed out (not counted)"
fi

step "the rest of the tests"
timeout "$(left 200)" $PY -m pytest -q -p no:cacheprovider -m "not slow" --ignore=tests/test_gpu.py tests/ \
  || { rc=$?; echo "rest of the tests: exit $rc (124: out of time)"; [ "$rc" -eq 124 ] || status=1; }

step "gpu_check exit status $status"
exit $status
