"""docs/rng_vectors.json - the contract's published test vectors - against the reference, the
C++ header (Philox and transforms) and the CPU kernel; docs/rng.md shows the same numbers."""
import json
import pathlib

import pytest
import torch

import fusedinit
import fusedinit.testing
from fusedinit import reference
from conftest import assert_bitwise_equal

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
pytestmark = pytest.mark.skipif(not (DOCS / "rng_vectors.json").exists(), reason="no docs folder")


def load():
    return json.loads((DOCS / "rng_vectors.json").read_text())


def as_dtype(bits, dtype):
    view = {2: torch.int16, 4: torch.int32}[torch.empty(0, dtype=dtype).element_size()]
    width = torch.empty(0, dtype=dtype).element_size() * 8
    raw = [int(b, 16) - (1 << width) if int(b, 16) >= 1 << (width - 1) else int(b, 16) for b in bits]
    return torch.tensor(raw, dtype=torch.int64).to(view).view(dtype)


@pytest.mark.parametrize("entry", load(), ids=lambda e: e["seed"])
def test_vectors(entry):
    seed, stream = int(entry["seed"], 16), int(entry["stream"], 16)
    idx = torch.tensor(entry["indices"], dtype=torch.int64)
    words = reference.stream_words(idx, seed, stream)
    assert [f"{w:08x}" for w in words.tolist()] == entry["words"]
    g = idx >> 2
    ctr = torch.stack([g & 0xFFFFFFFF, g >> 32, torch.full_like(g, stream & 0xFFFFFFFF),
                       torch.full_like(g, stream >> 32)], 1)
    key = torch.tensor([[seed & 0xFFFFFFFF, seed >> 32]] * len(idx))
    header = fusedinit.testing.philox4x32_10(ctr, key).gather(1, (idx & 3)[:, None])[:, 0]
    assert torch.equal(header, words)
    for name, case in entry["values"].items():
        dtype = getattr(torch, case["dtype"])
        expected = as_dtype(case["bits"], dtype)
        ref = reference.values_at(idx, kind=case["kind"], params=case["params"], seed=seed,
                                  stream=stream, dtype=dtype)
        assert_bitwise_equal(ref, expected, f"reference, {name}")
        kernel = fusedinit.testing.transform_words(words, case["kind"], case["params"])
        assert_bitwise_equal(reference.round_to(kernel, dtype, case["kind"], case["params"]),
                             expected, f"header transform, {name}")
        # The CPU kernel end to end on the leading (small) indices.
        small = [i for i in entry["indices"] if i < 64]
        t = torch.empty(max(small) + 1, dtype=dtype)
        spec = {0: fusedinit.Normal, 1: fusedinit.Uniform}.get(case["kind"])
        spec = spec(*case["params"][:2], stream=stream) if spec else fusedinit.TruncNormal(
            *case["params"][:4], stream=stream)
        fusedinit.init_many_([(t, spec)], seed=seed)
        assert_bitwise_equal(t[small], expected[: len(small)], f"cpu kernel, {name}")


def test_docs_show_the_vectors():
    text = (DOCS / "rng.md").read_text()
    first = load()[0]
    assert " ".join(first["words"]) in text
    for case in first["values"].values():
        assert " ".join(case["bits"]) in text


def test_param_stream_vector():
    """docs/rng.md: the stream of a parameter name."""
    import fusedinit
    assert fusedinit.param_stream("lm_head.weight") == 8183605209020681030
