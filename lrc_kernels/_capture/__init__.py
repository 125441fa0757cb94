"""Private implementation of :mod:`lrc_kernels.torch` (routing capture from torch models)."""
