"""The whole package's layering, checked on its source (rules of docs/architecture.md).

Every import is read from the syntax tree of every module, at module level and inside
functions alike: a lazy import is still a dependency. The rules:

- kernels know arrays only: ``cpu/`` imports ``cpu/`` and ``_spec``; ``gpu/`` imports
  ``gpu/``, ``_spec``, ``_validate`` and ``_messages``; the reference imports ``_spec`` (and
  its second half ``_reference_policies``, which imports ``_spec``);
- the container (``_trace``) knows no backend, no file format and no metric;
- file formats (``io/``, ``convert``) know no kernels and no metric;
- the CLI and the report sit on the public API (``lrc_kernels``, ``io``, ``convert``,
  ``torch``, ``_spec``, ``_validate``, ``_results``), never on the metric internals;
- no import cycle among module-level imports, and lazy imports only where listed below;
- small rooms: modules up to 600 lines, functions up to 80 lines of code (docstrings
  not counted), except the listed ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_package_layout import _imports

PKG = Path(__file__).resolve().parents[1] / "lrc_kernels"

METRIC_INTERNALS = (
    "lrc_kernels._api",
    "lrc_kernels._stream",
    "lrc_kernels._backends",
    "lrc_kernels._reduce",
    "lrc_kernels._srp_api",
    "lrc_kernels._cache_api",
    "lrc_kernels._cache_sizes",
)
BACKENDS = (
    "lrc_kernels.cpu",
    "lrc_kernels.gpu",
    "lrc_kernels.reference",
    "lrc_kernels._reference_policies",
)

# importer -> the only package modules it may import (prefix match)
ONLY = {
    "lrc_kernels.cpu": ("lrc_kernels.cpu", "lrc_kernels._spec"),
    "lrc_kernels.gpu": (
        "lrc_kernels.gpu",
        "lrc_kernels._spec",
        "lrc_kernels._validate",
        "lrc_kernels._messages",
    ),
    "lrc_kernels.reference": ("lrc_kernels._spec", "lrc_kernels._reference_policies"),
    "lrc_kernels._reference_policies": ("lrc_kernels._spec",),
    "lrc_kernels._spec": (),
    "lrc_kernels._messages": (),
}
# importer -> package modules it must not import (prefix match), and why
NEVER = {
    "lrc_kernels._trace": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.io", "lrc_kernels.cli", "lrc_kernels.report"),
        "the container knows no backend, file format or metric",
    ),
    "lrc_kernels.io": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.cli", "lrc_kernels.report"),
        "file formats know no kernels",
    ),
    "lrc_kernels.convert": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.cli", "lrc_kernels.report"),
        "converters know no kernels",
    ),
    "lrc_kernels._routing_log": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.cli", "lrc_kernels.report"),
        "converters know no kernels",
    ),
    "lrc_kernels.diagnose": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.cli", "lrc_kernels.report"),
        "the diagnosis sits on the public API",
    ),
    "lrc_kernels.plan": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels.cli", "lrc_kernels.report"),
        "the planner sits on the public API",
    ),
    "lrc_kernels.offload": (
        BACKENDS
        + METRIC_INTERNALS
        + ("lrc_kernels.cli", "lrc_kernels.report", "lrc_kernels.plan", "lrc_kernels._results"),
        "the replay is the planner's independent check: public API and its own caches only",
    ),
    "lrc_kernels.cli": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels._trace",),
        "the CLI sits on the public API",
    ),
    "lrc_kernels.report": (
        BACKENDS + METRIC_INTERNALS + ("lrc_kernels._trace", "lrc_kernels.cli"),
        "the report sits on the public API",
    ),
    "lrc_kernels.partial": (
        BACKENDS
        + (
            "lrc_kernels.io",
            "lrc_kernels.cluster",
            "lrc_kernels.study",
            "lrc_kernels.cli",
            "lrc_kernels.report",
        ),
        "partials sit on the front ends' passes and reductions; they know no cluster",
    ),
    "lrc_kernels.cluster": (
        BACKENDS
        + tuple(m for m in METRIC_INTERNALS if m != "lrc_kernels._stream")
        + ("lrc_kernels.study", "lrc_kernels.cli", "lrc_kernels.report"),
        "the cluster runs partials (and reads the file list); no metric internals",
    ),
    "lrc_kernels.study": (
        BACKENDS
        + tuple(m for m in METRIC_INTERNALS if m != "lrc_kernels._reduce")
        + ("lrc_kernels._trace", "lrc_kernels.cli"),
        "a study sits on partials, the cluster, io and the report (and _reduce's load "
        "balance / specialisation of finished results)",
    ),
}
# the lazy (function-level) imports that reach across layers, each with its reason
LAZY_ALLOWED = {
    ("lrc_kernels._validate", "lrc_kernels.cpu._validate"): "the CPU duplicate-id scan",
    ("lrc_kernels._validate", "lrc_kernels.gpu"): "id scans of GPU arrays run on the device",
}
# modules and functions allowed to be larger, with the reason
LONG_FUNCTIONS = {
    # the LFU engine's whole per-stream pass as one flat Numba function (133 lines): a
    # helper call per access costs reference counting of its array arguments, which made
    # the engines 1.5-1.7x slower when split (measured by the engine's author)
    "_stack_lfu.py:_lfu_stream",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "__pycache__" not in p.parts}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _edges(top_only: bool = False) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        deps = set()
        for name, top in _imports(path):
            if not name.startswith("lrc_kernels") or (top_only and not top):
                continue
            # `from .x import name` may name a function: keep the longest module prefix
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != mod:
                deps.add(name)
        out[mod] = deps
    return out


def _rule_for(table: dict, mod: str):
    keys = [k for k in table if _under(mod, k)]
    return table[max(keys, key=len)] if keys else None


def test_every_module_is_seen():
    assert "lrc_kernels.cpu._stack" in MODULES and "lrc_kernels.cli._srp" in MODULES
    assert len(MODULES) > 40


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_import_rules(mod):
    lazy_ok = {dst for (src, dst) in LAZY_ALLOWED if src == mod}
    deps = _edges()[mod]
    only = _rule_for(ONLY, mod)
    if only is not None:
        bad = sorted(d for d in deps if not any(_under(d, a) for a in only) and d not in lazy_ok)
        assert not bad, f"{mod} may import only {only}; imports {bad}"
    never = _rule_for(NEVER, mod)
    if never is not None:
        forbidden, why = never
        bad = sorted(d for d in deps if any(_under(d, f) for f in forbidden))
        assert not bad, f"{mod} imports {bad}: {why}"


def test_lazy_cross_layer_imports_are_listed():
    top, every = _edges(top_only=True), _edges()
    for mod, deps in every.items():
        for d in deps - top[mod]:
            for rule_src, rule_dst in LAZY_ALLOWED:
                if _under(mod, rule_src) and _under(d, rule_dst):
                    break
            else:
                # a lazy import inside one layer (e.g. loading a heavy optional module on
                # first use) is fine; across the kernel boundary it must be listed
                crosses = _under(d, "lrc_kernels.cpu") or _under(d, "lrc_kernels.gpu")
                same = _under(mod, "lrc_kernels.cpu") or _under(mod, "lrc_kernels.gpu")
                ok_backend = _under(mod, "lrc_kernels._backends")
                assert not crosses or same or ok_backend, f"{mod} lazily imports {d}"


def test_planner_and_replay_keep_the_package_import_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, lrc_kernels, lrc_kernels.plan, lrc_kernels.offload\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_cycles_among_module_level_imports():
    graph = _edges(top_only=True)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + "."):
                continue  # a package importing its own submodules
            if state.get(d) == 1:
                cyc = stack[stack.index(d) :] + [d]
                pytest.fail("import cycle: " + " -> ".join(cyc))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_cycle_through_the_old_edges():
    # the two cycles issue #13 found, now gone even as lazy imports
    every = _edges()
    assert not any(_under(d, "lrc_kernels.gpu") for d in every["lrc_kernels._trace"])
    assert not any(_under(d, "lrc_kernels._trace") for d in every["lrc_kernels.gpu._plan"])
    assert not any(
        _under(d, "lrc_kernels.cli")
        for m in MODULES
        if _under(m, "lrc_kernels.report")
        for d in every[m]
    )


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code: from the end of the docstring (or the signature) to the end."""
    body = node.body
    doc = body[0] if ast.get_docstring(node) is not None else None
    start = doc.end_lineno if doc is not None and len(body) > 1 else body[0].lineno - 1
    return node.end_lineno - start


def test_long_function_list_is_not_stale():
    for key in LONG_FUNCTIONS:
        fname, func = key.split(":")
        path = next(p for p in MODULES.values() if p.name == fname)
        nodes = [
            n
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.FunctionDef) and n.name == func
        ]
        assert nodes and _code_lines(nodes[0]) > 80, f"{key} is no longer long: drop it"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_small_rooms(mod):
    path = MODULES[mod]
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") <= 600, f"{path.relative_to(PKG)}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = _code_lines(node)
            key = f"{path.name}:{node.name}"
            if key in LONG_FUNCTIONS:
                continue
            assert n <= 80, f"{path.relative_to(PKG)}: {node.name} has {n} lines"
