"""Distribution codes of the op schema (csrc/fusedinit/rng_math.h, enum Kind)."""

NORMAL, UNIFORM, TRUNC_NORMAL, CONSTANT = 0, 1, 2, 3
PARAMS_PER_TENSOR = 6
