"""Command line (`python -m fusedinit bench | init-model`, `fusedinit-bench`): a client on top
of the public API, fusedinit.hf and fusedinit.testing; nothing below imports it."""
