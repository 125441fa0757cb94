"""``lrc_kernels._spec`` is the one place of the vocabulary: every user reads it from there."""

from __future__ import annotations

import re

import numpy as np

import lrc_kernels as lk
from lrc_kernels import _api, _spec, _validate, reference
from lrc_kernels.gpu import _plan


def test_policy_codes_have_one_source():
    from lrc_kernels.cpu import _stack

    assert _stack.POLICY_CODES is _spec.POLICY_CODES
    assert _plan.POLICY_CODES is _spec.POLICY_CODES
    assert reference.POLICIES is _spec.POLICIES
    assert _api.POLICIES is _spec.POLICIES
    assert sorted(_spec.POLICY_CODES.values()) == list(range(len(_spec.STACK_POLICIES)))


def test_cuda_sources_get_the_codes_from_spec():
    text = _plan.read_source("stack.cu")
    assert text.startswith(_spec.cuda_defines())
    # the #ifndef defaults (used when the file is compiled from disk, as the host shim
    # does) are the same codes
    raw = (_plan.KERNEL_DIR / "stack.cu").read_text()
    block = re.search(r"#ifndef LRC_POLICY_LRU\n(.*?)#endif", raw, flags=re.S)
    assert block is not None
    assert block.group(1) == _spec.cuda_defines()
    assert not _plan.read_source("stack.cu", defines=False).startswith("#define LRC_POLICY")


def test_levels_backends_and_dtypes():
    assert _api.LEVELS_SRP is _spec.LEVELS_SRP and _api.LEVELS_CACHE is _spec.LEVELS_CACHE
    assert _api.BACKENDS is _spec.BACKENDS
    assert _validate.id_dtype_for is _spec.id_dtype_for
    assert lk._trace.id_dtype_for is _spec.id_dtype_for
    assert [_spec.id_dtype_for(e) for e in (1, 256, 257, 65536, 65537)] == [
        np.uint8,
        np.uint8,
        np.uint16,
        np.uint16,
        np.uint32,
    ]


def test_m_columns_lay_blocks_side_by_side():
    assert _spec.m_columns([4, 1, 2]) == ([0, 5, 7], 10)
    assert _spec.m_columns([]) == ([], 0)
    tab = reference.window_hist_table(
        np.array([[[0, 1]], [[1, 2]], [[0, 2]]]), [0, 3], 3, [1, 2], [0], 1, False
    )
    cols, width = _spec.m_columns([1, 2])
    assert tab.shape[-1] == width
    # every block holds each expert's windows once: 3 windows of 1 token, 2 of 2
    assert tab[0, 0, 0, cols[0] : cols[0] + 2].sum() == 3 * 3
    assert tab[0, 0, 0, cols[1] : cols[1] + 3].sum() == 3 * 2


def test_domain_codes_in_order_of_first_appearance():
    tr = lk.Trace(
        np.zeros((4, 1, 1), np.int64), [0, 1, 2, 3, 4], num_experts=1, domains=list("babc")
    )
    names, codes = tr.domain_codes()
    assert names == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2]
    assert codes.dtype == np.int64
