"""fusedinit.fuse and init writes to temporaries (fresh tensors that are not the module's):
q, k, v drawn, concatenated and copy_'d into a parameter (torchtitan's fused wqkv) fold into the
parameter's own write; a temporary used any other way is written with the contract's values on
its deterministic stream (param_stream("fusedinit.temporary.<n>"), n counting the recording's
temporaries) and the code runs as written on them."""
import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream

SEED = 77
N_KV, PER_KV, HEAD, DIM = 2, 3, 4, 8  # q: 2*3 heads of 4 rows, k and v: 2 heads each




def contract(fill, shape, stream_name, *args, **kwargs):
    return fill(torch.empty(shape), *args, seed=SEED, stream=param_stream(stream_name), **kwargs)


def temporary(n):
    return f"fusedinit.temporary.{n}"


def qkv(t, init_q, init_k, init_v):
    """torchtitan's fused wqkv layout: q, k, v as temporaries, concatenated per kv head."""
    q = t.new_empty(N_KV * PER_KV * HEAD, DIM)
    k = t.new_empty(N_KV * HEAD, DIM)
    v = t.new_empty(N_KV * HEAD, DIM)
    init_q(q)
    init_k(k)
    init_v(v)
    fused = torch.cat([q.view(N_KV, PER_KV, HEAD, DIM), k.view(N_KV, 1, HEAD, DIM),
                       v.view(N_KV, 1, HEAD, DIM)], dim=1).view(-1, DIM)
    return q, k, v, fused


def wqkv():
    return nn.Linear(DIM, N_KV * (PER_KV + 2) * HEAD, bias=False)


def trunc(x):
    return nn.init.trunc_normal_(x, std=0.02)


def test_temporaries_concatenated_and_copied_are_the_params_own_write(op_calls):
    lin = wqkv()
    with fusedinit.fuse(lin, seed=SEED):
        fused = qkv(lin.weight, trunc, trunc, trunc)[3]
        with torch.no_grad():
            lin.weight.copy_(fused)
        del fused  # q, k, v gone with it: nothing left to fill
    assert op_calls == [1], "one op call, nothing drawn for the temporaries"
    expected = contract(fusedinit.trunc_normal_, lin.weight.shape, "weight", 0.0, 0.02)
    assert_bitwise_equal(lin.weight.detach(), expected)


def test_a_temporary_copied_whole_is_the_params_write(op_calls):
    lin = nn.Linear(DIM, DIM)
    with fusedinit.fuse(lin, seed=SEED):
        tmp = torch.empty(DIM, DIM)
        nn.init.normal_(tmp, std=0.5)
        with torch.no_grad():
            lin.weight.copy_(tmp.view(-1).view(DIM, DIM))
        del tmp
        nn.init.zeros_(lin.bias)
    assert op_calls == [2]
    assert_bitwise_equal(lin.weight.detach(),
                         contract(fusedinit.normal_, (DIM, DIM), "weight", 0.0, 0.5))


def test_a_temporary_that_is_read_gets_its_deterministic_stream():
    """Read before anything copies it: the contract's values on the temporary's stream, the
    same in every run, and the code's own arithmetic on them."""
    results = []
    for _ in range(2):
        lin = nn.Linear(DIM, DIM)
        with fusedinit.fuse(lin, seed=SEED):
            first = lin.weight.new_empty(DIM, DIM)
            nn.init.uniform_(first, -1.0, 1.0)
            second = torch.empty(DIM, DIM)
            nn.init.normal_(second)
            with torch.no_grad():
                lin.weight.copy_(second * 2.0)   # a read of `second` (mul), not a copy of it
        results.append((first.clone(), second.clone(), lin.weight.detach().clone()))
    expected_second = contract(fusedinit.normal_, (DIM, DIM), temporary(1))
    for first, second, weight in results:
        assert_bitwise_equal(second, expected_second)
        assert_bitwise_equal(weight, expected_second * 2.0)
        # Never read in the block: still written on exit, on its own stream.
        assert_bitwise_equal(first, contract(fusedinit.uniform_, (DIM, DIM), temporary(0),
                                             -1.0, 1.0))


def test_mixed_specs_in_a_cat_run_as_written(op_calls):
    lin = wqkv()
    with fusedinit.fuse(lin, seed=SEED):
        q, k, v, fused = qkv(lin.weight, trunc, nn.init.normal_, trunc)
        with torch.no_grad():
            lin.weight.copy_(fused)
    assert op_calls == [3], "the cat is a barrier: the three temporaries written at once"
    tq = contract(fusedinit.trunc_normal_, q.shape, temporary(0), 0.0, 0.02)
    tk = contract(fusedinit.normal_, k.shape, temporary(1))
    tv = contract(fusedinit.trunc_normal_, v.shape, temporary(2), 0.0, 0.02)
    expected = torch.cat([tq.view(N_KV, PER_KV, HEAD, DIM), tk.view(N_KV, 1, HEAD, DIM),
                          tv.view(N_KV, 1, HEAD, DIM)], dim=1).view(-1, DIM)
    assert_bitwise_equal(lin.weight.detach(), expected)
    assert_bitwise_equal(q, tq)


def test_a_concatenation_that_is_read_is_made_from_the_temporaries():
    """The lazy cat used by another op (and copied into a different dtype): its temporaries are
    written on their streams, the cat and views run as written, then the op."""
    lin = wqkv().to(torch.float64)
    with fusedinit.fuse(lin, seed=SEED):
        q, k, v, fused = qkv(torch.empty(1), trunc, trunc, trunc)
        total = fused.sum()
        with torch.no_grad():
            lin.weight.copy_(fused)  # float32 -> float64: not the param's own write
    tq, tk, tv = (contract(fusedinit.trunc_normal_, x.shape, temporary(i), 0.0, 0.02)
                  for i, x in enumerate((q, k, v)))
    expected = torch.cat([tq.view(N_KV, PER_KV, HEAD, DIM), tk.view(N_KV, 1, HEAD, DIM),
                          tv.view(N_KV, 1, HEAD, DIM)], dim=1).view(-1, DIM)
    assert_bitwise_equal(total, expected.sum())
    assert_bitwise_equal(lin.weight.detach(), expected.double())


def test_nothing_leaks_out_of_the_recording():
    lin = nn.Linear(DIM, DIM)
    with fusedinit.fuse(lin, seed=SEED):
        kept = torch.empty(DIM)
    assert fusedinit.models.engine.current_session() is None
    torch.manual_seed(3)
    nn.init.normal_(kept)  # after the block: torch's own draw
    torch.manual_seed(3)
    assert_bitwise_equal(kept, torch.randn(DIM))


def test_dtensor_temporaries_fold_without_collectives(tmp_path, op_calls):
    """t.new_empty on a Shard(0) DTensor parameter gives Replicate temporaries: folded into
    the parameter's write, each rank writing only its shard."""
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        lin = wqkv()
        lin.weight = nn.Parameter(distribute_tensor(lin.weight.detach(), mesh, [Shard(0)]))
        with fusedinit.fuse(lin, seed=SEED):
            fused = qkv(lin.weight, trunc, trunc, trunc)[3]
            assert fused.device.type == "meta", "a placeholder: nothing allocated or gathered"
            with torch.no_grad():
                lin.weight.copy_(fused)
            del fused
        assert op_calls == [1]
        weight = lin.weight.full_tensor()
    finally:
        dist.destroy_process_group()
    assert_bitwise_equal(weight, contract(fusedinit.trunc_normal_, weight.shape, "weight",
                                          0.0, 0.02))


def test_temporaries_folded_and_then_read_hold_what_the_param_got():
    lin = wqkv()
    with fusedinit.fuse(lin, seed=SEED):
        q, k, v, fused = qkv(lin.weight, trunc, trunc, trunc)
        with torch.no_grad():
            lin.weight.copy_(fused)
        k_sum = k.sum()          # read inside the block
    expected = contract(fusedinit.trunc_normal_, lin.weight.shape, "weight", 0.0, 0.02)
    assert_bitwise_equal(lin.weight.detach(), expected)
    laid_out = expected.view(N_KV, PER_KV + 2, HEAD, DIM)
    assert_bitwise_equal(k, laid_out[:, PER_KV].reshape(-1, DIM))
    assert_bitwise_equal(k_sum, laid_out[:, PER_KV].reshape(-1, DIM).sum())
    assert_bitwise_equal(q, laid_out[:, :PER_KV].reshape(-1, DIM))   # filled on exit
    assert_bitwise_equal(v, laid_out[:, PER_KV + 1].reshape(-1, DIM))
