"""Every quantile-table row the normal transform can reach, in every lane of an 8- and a 16-lane
vector whose other lanes use the common rows: a SIMD kernel that reads the common rows one way
(registers) and the rare ones another (gathers) must give the reference's bits either way."""
import random

import pytest
import torch

import fusedinit.testing
from fusedinit import reference
from fusedinit.ops.kinds import NORMAL
from conftest import assert_bitwise_equal, isas


def word_for_row(row: int, rng: random.Random) -> int:
    """A word whose normal reads table row `row` (= 2 * octave + mantissa bit 22), or None
    where no word does (k = 2b + 1 is odd, so rows 1 and 2 are unreachable)."""
    octave, upper = divmod(row, 2)
    if octave == 0:
        return None if upper else rng.choice([0, 1 << 31])  # k = 1
    if octave == 1:
        return rng.choice([1, 1 | 1 << 31]) if upper else None  # k = 3
    low_bits = rng.getrandbits(octave - 1) | 1  # k below its top two bits, odd
    k = (1 << octave) | (upper << (octave - 1)) | low_bits
    return (k >> 1) | (rng.getrandbits(1) << 31)


def test_word_for_row_reads_that_row():
    """The words below do land in the rows they are meant to (else the test proves nothing)."""
    rng = random.Random(0)
    for row in range(64):
        w = word_for_row(row, rng)
        if w is None:
            continue
        k = ((w << 1) | 1) & 0xFFFFFFFF
        octave = k.bit_length() - 1
        mant23 = ((k << (31 - octave)) & 0xFFFFFFFF) >> 8 & 0x7FFFFF
        assert 2 * octave + (mant23 >> 22) == row


@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("params", [[0.0, 1.0], [0.25, 3.0]])
def test_every_row_in_every_lane(lanes, params, cpu_isa):
    rng = random.Random(lanes)
    words = []
    for row in range(64):
        for lane in range(lanes):
            special = word_for_row(row, rng)
            if special is None:
                continue
            vector = [word_for_row(48 + rng.randrange(16), rng) for _ in range(lanes)]
            vector[lane] = special
            words += vector
    words = torch.tensor(words, dtype=torch.int64)
    full = [*params, 0.0, 0.0, 0.0, 0.0]
    expected = reference.values_from_words(words, NORMAL, full)
    for isa in isas():
        cpu_isa(isa)
        assert_bitwise_equal(fusedinit.testing.transform_words(words, NORMAL, full), expected, isa)
