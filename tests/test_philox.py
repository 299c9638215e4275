"""Philox4x32-10 known-answer vectors (Random123) on the C++ header and the reference."""
import torch

import fusedinit.testing
from fusedinit import reference

# (counter, key) -> output, from Random123's kat_vectors for philox4x32 with 10 rounds.
KATS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_kat_header():
    counters = torch.tensor([k[0] for k in KATS], dtype=torch.int64)
    keys = torch.tensor([k[1] for k in KATS], dtype=torch.int64)
    out = fusedinit.testing.philox4x32_10(counters, keys)
    assert out.tolist() == [list(k[2]) for k in KATS]


def test_kat_reference():
    for ctr, key, expected in KATS:
        cols = [torch.tensor([c], dtype=torch.int64) for c in ctr]
        out = reference.philox4x32_10(*cols, key[0], key[1])
        assert [int(o) for o in out] == list(expected)


def test_header_equals_reference_on_random_inputs():
    g = torch.Generator().manual_seed(1)
    counters = torch.randint(0, 2**32, (1000, 4), generator=g, dtype=torch.int64)
    keys = torch.randint(0, 2**32, (1000, 2), generator=g, dtype=torch.int64)
    out = fusedinit.testing.philox4x32_10(counters, keys)
    for r in range(0, 1000, 97):
        ref = reference.philox4x32_10(*counters[r:r + 1].unbind(1), int(keys[r, 0]), int(keys[r, 1]))
        assert out[r].tolist() == [int(x) for x in ref]


def test_stream_word_layout():
    """Element i uses word i % 4 of counter (i // 4 as two words, stream as two words)."""
    seed, stream = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    idx = torch.tensor([0, 1, 2, 3, 4, 2**33 + 6], dtype=torch.int64)
    words = reference.stream_words(idx, seed, stream)
    for i, w in zip(idx.tolist(), words.tolist()):
        g = i // 4
        ctr = torch.tensor([[g & 0xFFFFFFFF, g >> 32, stream & 0xFFFFFFFF, stream >> 32]])
        key = torch.tensor([[seed & 0xFFFFFFFF, seed >> 32]])
        assert fusedinit.testing.philox4x32_10(ctr, key)[0, i % 4].item() == w
