"""Global places (models/places.py): a local parameter written as blocks of global tensors - the
values of its elements' global indices on the global key's stream - and the recovery of a block
from a framework's view or copy of the local indices. Megatron-Core's use: test_megatron.py."""
import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import Normal, param_stream
from fusedinit.models.deferred import allocate_and_write_
from fusedinit.models.places import (block_of, check_cover, local_indices, view_block,
                                     whole_block)

SEED = 11


def reference(shape, key, std=1.0):
    return fusedinit.normal_(torch.empty(shape), 0.0, std, seed=SEED, stream=param_stream(key),
                             backend="reference")


def test_whole_block_with_a_stacked_layer_axis():
    """Layer 3 of 5 of a stacked key, rows 4..8 of 16 (a tensor-parallel shard)."""
    block = whole_block((4, 6), "layers.w", (5, 16, 6), (3, 4, 0))
    local = torch.empty(4, 6)
    fusedinit.init_many_([block.item(local, Normal(0.0, 1.0))], seed=SEED)
    assert_bitwise_equal(local, reference((5, 16, 6), "layers.w")[3, 4:8])


@pytest.mark.parametrize("copy", [False, True])
def test_block_of_a_transposed_chunk(copy):
    """Grouped experts' description: the local [h, E * f] weight viewed as [E, h, f],
    transposed, chunked - as a view, or as a `.contiguous()` copy (what Megatron makes)."""
    h, e, f = 3, 2, 4
    source = local_indices((h, e * f))
    part = source.view(e, h, f).transpose(-1, -2)[1]  # expert 1: [f, h]
    if copy:
        part = part.contiguous()
    block = block_of(part, source, "experts.w", (4, f, h), (3, 0, 0))
    assert block is not None
    local = torch.empty(h, e * f)
    fusedinit.init_many_([block.item(local, Normal(0.0, 1.0))], seed=SEED)
    expected = reference((4, f, h), "experts.w")[3]
    assert_bitwise_equal(local.view(e, h, f).transpose(-1, -2)[1], expected)


def test_block_of_refuses_what_is_no_view():
    source = local_indices((4, 4))
    assert block_of(source.flip(0).contiguous(), source, "k", (4, 4), (0, 0)) is None
    assert block_of(source[:, :1].expand(4, 3).contiguous(), source, "k", (4, 3), (0, 0)) is None
    assert block_of(source.reshape(-1)[[0, 5, 2]], source, "k", (3,), (0,)) is None
    beyond = torch.tensor([[0, 1], [20, 21]], dtype=source.dtype)  # past the 16 elements
    assert block_of(beyond, source, "k", (2, 2), (0, 0)) is None
    block = block_of(source[:1], source, "k", (3, 4, 4), (2, 0, 0))  # own size-1 dim
    assert block.lead == 1 and block.own_shape() == (4, 4)


def test_view_block_and_cover():
    w = torch.empty(8, 5, device="meta")
    top, bottom = torch.chunk(w, 2, dim=0)
    blocks = [view_block(top, "fc1", (2, 16, 5), (1, 0, 0)),
              view_block(bottom, "fc1", (2, 16, 5), (1, 8, 0))]
    assert blocks[1].offset == 20 and blocks[1].size == (1, 4, 5)
    check_cover("fc1.weight", 40, blocks)
    with pytest.raises(ValueError, match="fc1.weight: its global blocks hold 20 elements"):
        check_cover("fc1.weight", 40, blocks[:1])


def test_materialize_with_places_writes_global_blocks():
    """The generic path Megatron's materialize_ takes: a recorded module, whose weight is two
    blocks of a global tensor (a gated MLP's w and v halves on tensor-parallel rank 1 of 2),
    one op call; a parameter without a place keeps its own name's stream."""
    model = fusedinit.deferred_init(nn.Linear, 6, 8)  # weight [8, 6]
    w = torch.empty(8, 6, device="meta")
    top, bottom = torch.chunk(w, 2, dim=0)
    places = {"weight": [view_block(top, "fc1", (16, 6), (4, 0)),
                         view_block(bottom, "fc1", (16, 6), (12, 0))]}
    allocate_and_write_(model, torch.device("cpu"), SEED, places=places,
                        init=lambda m: nn.init.normal_(m.weight, 0.0, 0.02))
    g = reference((16, 6), "fc1", 0.02)
    assert_bitwise_equal(model.weight.detach(), torch.cat([g[4:8], g[12:16]]))
    assert model.bias.abs().max() <= 1 / 6 ** 0.5  # nn.Linear's own bias rule, by name


@pytest.mark.parametrize("global_shape,global_offset", [((16, 6), (4, 0)), ((3, 16, 6), (2, 4, 0))])
def test_a_padding_row_of_a_placed_parameter_is_its_local_row(global_shape, global_offset):
    """`weight[1].zero_()` after a draw is a padding row of the local tensor: zeroed there,
    the other rows the global block's values (before: read as a row of the global tensor - a
    row elsewhere, or with a stacked axis, the whole block zeroed)."""
    model = fusedinit.deferred_init(nn.Linear, 6, 4, bias=False)  # weight [4, 6]
    places = {"weight": [whole_block((4, 6), "w", global_shape, global_offset)]}

    def init(m):
        nn.init.normal_(m.weight)
        with torch.no_grad():
            m.weight[1].zero_()

    allocate_and_write_(model, torch.device("cpu"), SEED, places=places, init=init)
    expected = reference(global_shape, "w")[global_offset[:-2] + (slice(4, 8),)].clone()
    expected[1] = 0
    assert_bitwise_equal(model.weight.detach(), expected)
