"""The README's commands and Python examples work as written."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert blocks[0].strip().startswith('pip install -e ".[report]" && lrc report traces/')
    assert blocks[1].strip() == 'pip install -e ".[test]" && python -m pytest'
    # the main job's traces are shipped
    for path in re.findall(r"traces/\S+\.lrc\.arrow", blocks[0]):
        assert (ROOT / path).is_file(), path
    # CI runs exactly the README's test command
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet --disable-pip-version-check -e ".[test]"' in ci
    assert "\npython -m pytest\n" in ci


def _run_block(block: str) -> tuple[dict, list]:
    """Run a README block statement by statement; the values of its bare expressions."""
    ns: dict = {"__name__": "readme"}
    values = []
    for node in ast.parse(block).body:
        if isinstance(node, ast.Expr):
            values.append(eval(compile(ast.Expression(node.value), "README.md", "eval"), ns))
        else:
            exec(compile(ast.Module([node], type_ignores=[]), "README.md", "exec"), ns)
    return ns, values


def test_readme_python_runs(monkeypatch):
    """The README's Python example runs and shows what its comments say."""
    import lrc_kernels as lk

    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 1
    ns, values = _run_block(blocks[0])
    tr, r, s = ns["tr"], ns["r"], ns["s"]
    L, E, k = tr.num_layers, tr.num_experts, tr.top_k
    # r.value, r.threshold, r.ci: shapes (3, L), a 95 % interval around each value
    value, threshold, (lo, hi) = values[0]
    assert value.shape == threshold.shape == lo.shape == hi.shape == (3, L)
    assert r.m == [4, 16, 64] and r.level == "layer" and r.bootstrap == 1000
    assert (lo <= value).all() and (value <= hi).all()
    np.testing.assert_array_equal(value[1], lk.srp(tr, 16, level="layer").value)
    # s.at(2): one SCH hit rate per layer at C = 2k
    assert s.rates.shape == (L, E)
    np.testing.assert_array_equal(values[1], s.rates[:, 2 * k - 1])
    # one LRU cache shared by all layers, at C = L * k
    model = lk.hit_curve(tr, "lru", level="model")
    assert float(values[2]) == float(model.rates[L * k - 1])
    # a path is streamed: the same numbers as the trace in memory, one per domain
    low = values[3]
    mem = lk.srp(lk.read_trace("traces/synthetic-low.lrc.arrow"), 16, by_domain=True)
    assert low.domains == mem.domains and len(low.domains) > 1
    np.testing.assert_array_equal(low.value, mem.value)
    assert os.getcwd() == str(ROOT)
