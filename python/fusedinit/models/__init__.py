"""Model level: the interception engine (fuse), the write queue (one init_many_ per device per
flush), deferred construction (deferred_init / materialize_), init rules per module type and
parameter-name streams. Builds on fusedinit.ops only - never on the kernels (_C, triton)
directly, nor on hf or cli."""
