"""On a real GPU: the CUDA and Triton kernels equal the CPU kernel and the reference bit for
bit, one launch per call, the current stream, more than 2^31 elements. Skipped without a GPU."""
import pytest
import torch

import fusedinit
from fusedinit import reference
from fusedinit.ops.kinds import NORMAL
from conftest import DTYPES, assert_bitwise_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SPECS = [fusedinit.Normal(0.1, 1.5, stream=2**63 + 5), fusedinit.Uniform(-1.0, 2.0, stream=3),
         fusedinit.TruncNormal(0.0, 1.0, -1.5, 0.5), fusedinit.Constant(-0.0),
         fusedinit.Normal(0.0, 0.02, padding_idx=1), fusedinit.Uniform(-1.5e38, 1.5e38),
         fusedinit.Normal(0, 1e-30), fusedinit.Normal(0, 1e5),
         fusedinit.TruncNormal(0, 1, 4.5, 5.5)]


def gpu_backends():
    names = []
    if fusedinit.ops.op.has_kernel("cuda"):
        names.append("cuda")
    if "triton" in fusedinit.available_backends():
        names.append("triton")
    return names


def layouts(shape, dtype, device):
    yield "contiguous", torch.empty(shape, dtype=dtype, device=device)
    n = shape[0] * shape[1]
    yield "unaligned", torch.empty(n + 1, dtype=dtype, device=device)[1:].view(shape)
    yield "transposed", torch.empty(shape[1], shape[0], dtype=dtype, device=device).t()


@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_gpu_equals_cpu(backend, dtype, spec):
    shape = (7, 10007)  # several blocks / chunks, a partial last unit
    seed = 2**64 - 3
    if spec.bound() > torch.finfo(dtype).max:
        # The dtype cannot hold what the spec draws: the GPU refuses it as the CPU does
        # (ValueError naming the spec), before writing anything.
        t = torch.zeros(shape, dtype=dtype, device="cuda")
        with pytest.raises(ValueError, match="beyond"):
            fusedinit.init_many_([(t, spec)], seed=seed, backend=backend)
        assert int(t.count_nonzero()) == 0
        return
    expected = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed)[0]
    for name, t in layouts(shape, dtype, "cuda"):
        fusedinit.init_many_([(t, spec)], seed=seed, backend=backend)
        assert_bitwise_equal(t.cpu(), expected, f"{backend} {name}")


@pytest.mark.parametrize("backend", gpu_backends())
def test_multi_tensor_list(backend):
    dev = "cuda"
    items = [
        (torch.empty(1000, 64, dtype=torch.bfloat16, device=dev), fusedinit.Normal(0, 0.02, padding_idx=0, stream=1)),
        (torch.empty(64, 64, device=dev), fusedinit.TruncNormal(0, 0.02, -0.04, 0.04, stream=2)),
        (torch.empty(0, 5, device=dev), fusedinit.Normal(stream=9)),
        (torch.empty(64, device=dev), fusedinit.Constant(0.0)),
        (torch.empty(64, dtype=torch.float16, device=dev), fusedinit.Constant(1.0)),
        (torch.empty(17, 3, dtype=torch.float64, device=dev), fusedinit.Uniform(-0.1, 0.1, stream=3)),
        (torch.empty(40, 30, dtype=torch.float16, device=dev).t(), fusedinit.Normal(1, 2, stream=5)),
        (torch.empty((), device=dev), fusedinit.Uniform(stream=7)),
    ] + [(torch.empty(i + 1, 33, device=dev), fusedinit.Normal(stream=100 + i)) for i in range(40)]
    fusedinit.init_many_(items, seed=1234, backend=backend)
    for i, (tensor, spec) in enumerate(items):
        expected = fusedinit.init_many_([(torch.empty(tensor.shape, dtype=tensor.dtype), spec)],
                                        seed=1234)[0]
        assert_bitwise_equal(tensor.cpu(), expected, f"items[{i}] {spec}")


def test_cuda_is_one_launch_for_many_tensors():
    if not fusedinit.ops.op.has_kernel("cuda"):
        pytest.skip("built without CUDA kernels")
    items = [(torch.empty(i + 1, 100, device="cuda", dtype=dt), fusedinit.Normal(stream=i))
             for i in range(50) for dt in (torch.float32, torch.bfloat16)]
    fusedinit.init_many_(items, seed=1)  # warm up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fusedinit.init_many_(items, seed=1)
        torch.cuda.synchronize()
    launches = [e for e in prof.events() if "init_kernel" in e.name]
    assert len(launches) == 1, [e.name for e in prof.events()]


@pytest.mark.parametrize("backend", gpu_backends())
def test_current_stream(backend):
    side = torch.cuda.Stream()
    t = torch.zeros(1 << 22, device="cuda")
    side.wait_stream(torch.cuda.current_stream())  # the zeros are written on the default stream
    with torch.cuda.stream(side):
        fusedinit.normal_(t, seed=5, backend=backend)
        snapshot = t.clone()  # ordered after the init on the same stream
    side.synchronize()
    assert_bitwise_equal(snapshot.cpu(), fusedinit.normal_(torch.empty(1 << 22), seed=5))


@pytest.mark.parametrize("backend", gpu_backends())
def test_more_than_2_31_elements(backend):
    rows, cols = 2**16 + 3, 2**15 + 1
    n = rows * cols
    t = torch.empty(rows, cols, dtype=torch.bfloat16, device="cuda")
    seed, stream, pad = 2**64 - 5, 11, rows - 2
    fusedinit.normal_(t, 0.0, 1.0, padding_idx=pad, seed=seed, stream=stream, backend=backend)
    flat = t.view(-1)
    for centre in (0, 2**31, n - 64, (pad - 1) * cols):
        idx = torch.arange(max(0, centre - 64), min(n, centre + 64), dtype=torch.int64)
        expected = reference.values_at(idx, kind=NORMAL, params=[0.0, 1.0, 0, 0, 0, 0], seed=seed,
                                       stream=stream, dtype=torch.bfloat16)
        assert_bitwise_equal(flat[idx.cuda()].cpu(), expected, f"around index {centre}")
    assert (t[pad] == 0).all()
    assert int((t == 0).sum()) == cols and not torch.isnan(t).any()
    del t
    torch.cuda.empty_cache()


def test_from_config_on_cuda_equals_cpu():
    tf = pytest.importorskip("transformers")
    config = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                            pad_token_id=1)
    gpu = fusedinit.from_config(config, device="cuda", dtype=torch.bfloat16, seed=3)
    cpu = fusedinit.from_config(config, dtype=torch.bfloat16, seed=3)
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    for (k, a), (_, b) in zip(gpu.state_dict().items(), cpu.state_dict().items()):
        assert_bitwise_equal(a.cpu(), b, k)


@pytest.mark.parametrize("backend", gpu_backends())
def test_global_blocks_on_gpu(backend):
    """Shards with aligned and unaligned global index offsets."""
    full = fusedinit.normal_(torch.empty(64, 100), seed=3, stream=4, padding_idx=7)
    for lo, hi in [(0, 34), (34, 67), (67, 100), (8, 96)]:
        part = torch.empty(64, hi - lo, device="cuda")
        fusedinit.normal_(part, seed=3, stream=4, padding_idx=7, global_shape=(64, 100),
                          global_offset=(0, lo), backend=backend)
        assert_bitwise_equal(part.cpu(), full[:, lo:hi].contiguous(), f"{backend} [{lo}, {hi})")


def _capture_items():
    return [(torch.empty(300, 77, device="cuda"), fusedinit.Normal(0.0, 0.5, stream=1)),
            (torch.empty(64, 64, dtype=torch.bfloat16, device="cuda"),
             fusedinit.Uniform(-1.0, 1.0, stream=2))]


def _warm_up(items, backend):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles the Triton kernel), as torch asks
        fusedinit.init_many_(items, seed=9, backend=backend)
    torch.cuda.current_stream().wait_stream(side)


@pytest.mark.parametrize("backend", gpu_backends())
def test_cuda_graph_capture_and_replay(backend):
    """Captured init replays the captured values: pointers, seed and streams are frozen at
    capture time (seed=None is drawn once, at capture, from torch's CPU generator). Capture
    executes nothing, so the expectation is computed on the CPU from the seed the capture
    resolved. Between the replays, other launches churn the pinned host memory: a graph's
    Triton metadata must stay where the graph reads it."""
    items = _capture_items()
    _warm_up(items, backend)
    graph = torch.cuda.CUDAGraph()
    torch.manual_seed(1234)
    with torch.cuda.graph(graph):
        fusedinit.init_many_(items, seed=None, backend=backend)
    torch.manual_seed(1234)  # resolves the capture's seed again
    expected = fusedinit.init_many_([(torch.empty(t.shape, dtype=t.dtype), spec)
                                     for t, spec in items])
    for t, _ in items:
        t.zero_()
    graph.replay()
    torch.cuda.synchronize()
    for i, ((t, _), e) in enumerate(zip(items, expected)):
        assert_bitwise_equal(t.cpu(), e, f"replay items[{i}]")
    for n in range(1, 40):  # other calls reuse whatever pinned memory is free
        others = [(torch.empty(n, 7 * n, device="cuda"), fusedinit.Normal(stream=j))
                  for j in range(n % 5 + 1)]
        fusedinit.init_many_(others, seed=n, backend=backend)
    for t, _ in items:
        t.zero_()
    graph.replay()  # the same values again: seed and metadata are part of the graph
    torch.cuda.synchronize()
    for i, ((t, _), e) in enumerate(zip(items, expected)):
        assert_bitwise_equal(t.cpu(), e, f"second replay items[{i}]")


def test_triton_capture_before_first_use_is_a_clear_error():
    """The Triton backend's coefficient table is copied to a device at its first use, which
    cannot happen inside a capture: a clear error before any CUDA call, and the capture
    (empty) still ends cleanly."""
    if "triton" not in fusedinit.available_backends():
        pytest.skip("no Triton")
    from fusedinit.triton import launch
    items = _capture_items()
    launch.forget_device(torch.device("cuda", torch.cuda.current_device()))
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="before capturing"):
        with torch.cuda.graph(graph):
            fusedinit.init_many_(items, seed=1, backend="triton")
    fusedinit.init_many_(items, seed=1, backend="triton")  # outside capture: fine again


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", gpu_backends())
def test_tensors_on_another_device_than_the_current_one(backend):
    t = torch.empty(1000, 33, device="cuda:1")
    with torch.cuda.device(0):
        fusedinit.normal_(t, seed=4, backend=backend)
    assert_bitwise_equal(t.cpu(), fusedinit.normal_(torch.empty(1000, 33), seed=4), backend)


def test_cuda_more_tensors_than_one_launch_holds():
    """More than 128 tensors: one launch per 128 descriptors, every tensor right."""
    if not fusedinit.ops.op.has_kernel("cuda"):
        pytest.skip("built without CUDA kernels")
    items = [(torch.empty(i % 5 + 1, 40, device="cuda"), fusedinit.Normal(stream=i))
             for i in range(300)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fusedinit.init_many_(items, seed=3, backend="cuda")
        torch.cuda.synchronize()
    assert len([e for e in prof.events() if "init_kernel" in e.name]) == 3
    for i, (t, spec) in enumerate(items):
        expected = fusedinit.init_many_([(torch.empty(t.shape), spec)], seed=3)[0]
        assert_bitwise_equal(t.cpu(), expected, f"items[{i}]")
