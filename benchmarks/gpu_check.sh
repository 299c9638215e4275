#!/usr/bin/env bash
# The one GPU check, under 5 minutes on an H200 (offline: torch, triton, ninja and the test
# packages are already installed there). Every minute should leave a number or a precise error,
# so the steps run in this order and none can skip the ones after it:
#   1. the device (name, capability, clocks), ninja, and the build for this GPU's architecture
#      alone (TORCH_CUDA_ARCH_LIST; a third of the default's device code)
#   2. the GPU tests (tests/test_gpu.py), without -x, verbose, with a summary even when cut
#   3. cross-check CUDA == Triton == CPU bit for bit and benchmark against normal_ and fill_
#      (gpu_bench.py rewrites its JSON and Markdown rows after every step)
#   4. optionally, one ncu pass (2^28 float32 / bfloat16) for shared-memory wavefronts
#   5. the CPU kernels' ISA variants natively (this machine's CPU likely has AVX-512), then the
#      rest of the suite in the time left (CI runs it too, but with another torch and Python)
# Time limits send SIGINT: pytest then prints its summary and gpu_bench.py saves what it has.
# Everything printed also goes to $OUT (or ./gpu_check_out): gpu_check.log, gpu_bench.json,
# gpu_bench_rows.md, for benchmarks/RESULTS.md.
# Without a GPU (GPU_CHECK_DRY=1, or no nvidia-smi) the GPU steps print their headers and
# "skipped: no GPU", so the script can be checked end to end anywhere.
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
GPU=1
if [ "${GPU_CHECK_DRY:-0}" = 1 ] || ! nvidia-smi -L >/dev/null 2>&1; then GPU=0; fi

left() {  # seconds left of the budget, at most $1
  local rest=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$rest" -gt "$1" ]; then echo "$1"; elif [ "$rest" -gt 5 ]; then echo "$rest"; else echo 5; fi
}
step() { echo; echo "=== [$(( $(date +%s) - START )) s] $*"; }
limited() {  # seconds, command...: SIGINT at the limit (summaries get printed), KILL 15 s later;
  # exit status 124 when the limit was reached
  local seconds=$1; shift
  timeout -s INT -k 15 "$seconds" "$@"
}
pytest_args=(-v -rfE --durations=10 -p no:cacheprovider)

step "device"
if [ "$GPU" = 1 ]; then
  nvidia-smi --query-gpu=name,compute_cap,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,driver_version \
    --format=csv 2>/dev/null || echo "nvidia-smi: query failed"
else
  echo "skipped: no GPU (nvidia-smi finds none, or GPU_CHECK_DRY=1)"
fi
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  CUDA_HOME=$(cd "$CUDA_HOME" && pwd -P)
  export CUDA_HOME
fi
echo "CUDA_HOME=${CUDA_HOME:-unset}"
$PY - <<'PY'
import sys, torch
try:
    import triton
    triton_version = triton.__version__
except Exception as exc:
    triton_version = f"not importable ({exc})"
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "triton", triton_version)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "capability", torch.cuda.get_device_capability(), "SMs",
          p.multi_processor_count)
PY
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores," \
     "avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"

step "ninja"
if $PY -c "import ninja" >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1; then
  echo "ninja $($PY -m ninja --version 2>/dev/null || ninja --version)"
else
  # Without ninja, torch's BuildExtension compiles every source one after another: the build
  # below then relies on compiling one architecture only. To get ninja on an offline machine,
  # carry its wheel (pip download ninja; pip install --no-index ./ninja-*.whl).
  echo "WARNING: ninja not found: the ~14 sources compile serially (several minutes); carry a" \
       "ninja wheel and pip install it offline for a parallel build"
fi

step "build"
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && [ "$GPU" = 1 ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}
echo "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-unset (sm_80, sm_90, PTX)}"
export MAX_JOBS=${MAX_JOBS:-16}
t0=$(date +%s)
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  echo "skipped: GPU_CHECK_SKIP_BUILD=1 (using the installed fusedinit)"
else
  limited "$(left 170)" $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || { echo "BUILD FAILED (exit $?, $(( $(date +%s) - t0 )) s)"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
# pip -q hides the build's warning: say loudly whether the CUDA kernels were built, and why not.
$PY - <<'PY'
import fusedinit, torch
from fusedinit.ops import op, cuda_arch
try:
    from fusedinit import _build_info
    built, skipped = _build_info.CUDA_KERNELS, _build_info.CUDA_SKIPPED
except ImportError:
    built, skipped = None, "no build info (not built by setup.py?)"
print("backends", fusedinit.available_backends())
print("CUDA_KERNELS", built, "| CUDA_SKIPPED", skipped)
if torch.version.cuda and not built:
    print("WARNING: CUDA KERNELS NOT BUILT - every CUDA check below runs the Triton backend alone:",
          skipped)
present = op.has_kernel("cuda")
runs = present and torch.cuda.is_available() and cuda_arch.cuda_kernels_run_on(torch.device("cuda"))
print("CUDA kernels present:", present, "| they run on this GPU:", runs)
PY

step "GPU tests"
if [ "$GPU" = 1 ]; then
  limited "$(left 110)" $PY -m pytest "${pytest_args[@]}" tests/test_gpu.py tests/test_triton_capture.py \
    || { rc=$?; echo "GPU tests: exit $rc"; status=1; }
else
  echo "skipped: no GPU"
fi

step "cross-check and benchmark"
if [ "$GPU" = 1 ]; then
  limited "$(left 90)" $PY benchmarks/gpu_bench.py --check-max-log2 28 \
    --json "$OUT/gpu_bench.json" --markdown "$OUT/gpu_bench_rows.md" \
    || { rc=$?; echo "gpu_bench: exit $rc (124: cut by the time limit, its partial results saved)"; status=1; }
else
  echo "skipped: no GPU (CI runs benchmarks/gpu_bench.py --dry-run)"
fi

step "ncu: shared-memory wavefronts and instructions of the CUDA kernel, 2^28 values"
if [ "$GPU" = 1 ] && command -v ncu >/dev/null 2>&1 && [ "$(left 60)" -ge 40 ]; then
  limited "$(left 40)" ncu --target-processes all -k regex:init_kernel --metrics \
    smsp__inst_executed.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,gpu__time_duration.sum \
    $PY -c 'import torch, fusedinit
for dt in (torch.float32, torch.bfloat16):
    t = torch.empty(1 << 28, dtype=dt, device="cuda")
    fusedinit.normal_(t, seed=1, backend="cuda"); torch.cuda.synchronize(); print(dt, "done")' \
    || echo "ncu pass failed or timed out (not counted)"
else
  echo "skipped: no GPU, no ncu, or under 60 s left"
fi

step "CPU kernels: every ISA variant this CPU runs, natively"
# The AVX-512 kernels run natively only where the CPU has AVX-512 (CI's machines have not had
# it since contract v1; there they run on SIMDe, variant avx512-simde, when its headers exist).
$PY -c "import fusedinit.testing as t; print('native avx512 variant:', t.set_cpu_isa('avx512') == 'avx512')" \
  || echo "native avx512 variant: unavailable"
limited "$(left 60)" $PY -m pytest "${pytest_args[@]}" tests/test_cpu_vs_reference.py \
  tests/test_transforms.py tests/test_quantile_rows.py tests/test_isa_race.py tests/test_simde_variant.py \
  -k "variant or lane or switching or cpu_equals_reference" \
  || { rc=$?; echo "CPU variant tests: exit $rc"; status=1; }

step "the rest of the tests, in the time left"
limited "$(left 200)" $PY -m pytest -q -rfE -p no:cacheprovider -m "not slow" \
  --ignore=tests/test_gpu.py --ignore=tests/test_triton_capture.py \
  --ignore=tests/test_cpu_vs_reference.py --ignore=tests/test_simde_variant.py \
  --ignore=tests/test_gpu_check_script.py tests/ \
  || { rc=$?; echo "rest of the tests: exit $rc (124: out of time, not counted)";
       [ "$rc" -eq 124 ] || status=1; }

step "gpu_check exit status $status"
exit $status
