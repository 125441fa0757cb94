"""The folder tree is the architecture: io, cli and report are packages with small modules,
file formats know no kernels, and the command line and the report sit on the public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lrc_kernels"
# kernels and the metric implementation behind the public API
KERNELS = ("lrc_kernels.cpu", "lrc_kernels.gpu", "lrc_kernels._api", "lrc_kernels.reference")


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).glob("*.py"))


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, imported at module level) of every import in a module."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for n in tree.body:  # `if TYPE_CHECKING:` blocks count as module level
        if isinstance(n, ast.If):
            top.update(id(c) for c in n.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, id(node) in top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module:
                out.append((mod, id(node) in top))
            else:  # from .. import name: a submodule or a name of the package
                out.extend((f"{mod}.{a.name}", id(node) in top) for a in node.names)
    return out


def _is_kernel(name: str) -> bool:
    return any(name == k or name.startswith(k + ".") for k in KERNELS)


@pytest.mark.parametrize("sub", ["io", "cli", "report"])
def test_is_a_package_of_small_modules(sub):
    assert (PKG / sub / "__init__.py").is_file()
    assert not (PKG / f"{sub}.py").exists(), f"{sub}.py and {sub}/ side by side"
    for path in _modules(sub):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 600, f"{path.name}: {lines} lines"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= 80, f"{path.name}: {node.name} has {n} lines"


def test_file_formats_know_no_kernels():
    for path in _modules("io"):
        for name, _ in _imports(path):
            assert not _is_kernel(name), f"io/{path.name} imports {name}"
            assert name != "lrc_kernels", f"io/{path.name} imports the metric API"


@pytest.mark.parametrize("sub", ["cli", "report"])
def test_cli_and_report_sit_on_the_public_api(sub):
    for path in _modules(sub):
        for name, _ in _imports(path):
            assert not _is_kernel(name), f"{sub}/{path.name} imports {name}"


def test_the_relative_imports_are_resolved():
    # the checks above only mean something if imports resolve to package names
    names = {n for n, _ in _imports(PKG / "io" / "_file.py")}
    assert "lrc_kernels._validate" in names and "lrc_kernels.io._format" in names


def test_public_import_paths():
    io = importlib.import_module("lrc_kernels.io")
    for name in (
        "read_trace", "write_trace", "TraceWriter", "TraceReader", "iter_trace_batches",
        "repair_trace", "TraceFileError", "IncompleteTraceError", "IncompleteTraceWarning",
        "FORMAT_NAME", "FORMAT_VERSION", "TraceSource", "open_sources", "concat_traces",
    ):  # fmt: skip
        assert hasattr(io, name), name
    cli = importlib.import_module("lrc_kernels.cli")
    assert callable(cli.main) and cli.TraceSource is io.TraceSource
    report = importlib.import_module("lrc_kernels.report")
    assert callable(report.write_report)
    import lrc_kernels as lk

    assert lk.read_trace is io.read_trace and lk.write_report is report.write_report


def test_cli_and_report_use_the_vocabulary():
    from lrc_kernels import _spec, cli, report

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    curves = next(a for a in sub.choices["curves"]._actions if a.dest == "policy")
    assert tuple(curves.choices) == _spec.ALL_POLICIES
    srp = next(a for a in sub.choices["srp"]._actions if a.dest == "level")
    assert tuple(srp.choices) == _spec.LEVELS_SRP
    # the report shows every policy, strongest first
    assert sorted(report.POLICY_ORDER) == sorted(_spec.POLICIES)
