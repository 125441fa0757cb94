"""The documentation builds offline with one command, and its code examples run.

Conventions for examples in ``docs/*.md`` (stated here, the one place that defines them):

- every fenced ``python`` block runs, in page order, in one namespace per page, with a fresh
  temporary working directory (``traces/`` of the checkout is linked into it);
- a block right after the HTML comment ``<!-- test: skip -->`` is not run (say why next to
  it: a GPU, a real model download...); after ``<!-- test: slow -->`` it runs only in the
  test marked ``slow`` (for examples that import PyTorch and transformers).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARK = re.compile(r"<!--\s*test:\s*(skip|slow)\s*-->\s*$")
# Pages whose authors have yet to mark their non-runnable fragments (a real model, a GPU)
# with <!-- test: skip -->. Each entry is reported as a skip with its reason; remove it as
# soon as the page is marked.
PENDING: dict[str, str] = {}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


def code_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, source, mark)`` of every fenced python block of a markdown page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    i = 0
    mark = None
    while i < len(lines):
        line = lines[i]
        m_mark = MARK.search(line.strip())
        if m_mark:
            mark = m_mark.group(1)
            i += 1
            continue
        m = FENCE.match(line)
        if m:
            fence, lang, indent = m.group("fence"), m.group("lang"), len(m.group("indent"))
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].strip().startswith(fence):
                j += 1
            if lang in ("python", "py"):
                body = "\n".join(ln[indent:] for ln in lines[start:j])
                out.append((start + 1, body, mark))
            mark = None
            i = j + 1
            continue
        if line.strip():
            mark = None
        i += 1
    return out


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if code_blocks(p))


def _run_page(page: Path, tmp_path: Path, marks: set[str | None]) -> int:
    if (ROOT / "traces").is_dir():
        (tmp_path / "traces").symlink_to(ROOT / "traces", target_is_directory=True)
    ns: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        for line, src, mark in code_blocks(page):
            if mark == "skip" or mark not in marks:
                continue
            try:
                exec(compile(src, f"{page.name}:{line}", "exec"), ns)  # noqa: S102
            except Exception as exc:
                raise AssertionError(
                    f"example at docs/{page.name} line {line} failed: {exc!r}"
                ) from exc
            ran += 1
    finally:
        os.chdir(old)
    return ran


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_examples_run(page, tmp_path):
    if page.name in PENDING:
        pytest.skip(f"docs/{page.name}: {PENDING[page.name]}")
    _run_page(page, tmp_path, {None})


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [p for p in _pages() if any(m == "slow" for _, _, m in code_blocks(p))] or [None],
    ids=lambda p: getattr(p, "name", "none"),
)
def test_slow_examples_run(page, tmp_path):
    if page is None:
        pytest.skip("no example is marked slow")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    assert _run_page(page, tmp_path, {None, "slow"}) > 0


def test_mkdocs_build_strict(tmp_path):
    """``mkdocs build --strict`` (the one documented command) succeeds without network."""
    missing = [m for m in ("mkdocs", "mkdocstrings_handlers.python") if not _has_module(m)]
    if missing:
        pytest.skip(f"{missing} not installed: pip install mkdocs 'mkdocstrings[python]'")
    env = dict(os.environ)
    # any attempt to reach the network fails at once instead of hanging
    env.update(
        {
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "",
            "no_proxy": "",
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    site = tmp_path / "site"
    for page in (
        "index.html",
        "quickstart/index.html",
        "metrics/index.html",
        "api/index.html",
        "benchmarks/index.html",
        "changelog/index.html",
    ):
        assert (site / page).exists(), page
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # the API reference really is generated from the docstrings
    assert "Segment routing best performance" in api and "hit_curve" in api
    assert (site / "img" / "locality.png").exists()
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Added" in changelog  # CHANGELOG.md was included


def test_every_nav_page_exists_or_is_left_out():
    """Pages named in mkdocs.yml either exist or are dropped by docs/_hooks.py."""
    sys.path.insert(0, str(DOCS))
    try:
        import _hooks
    finally:
        sys.path.remove(str(DOCS))
    nav = [{"A": "index.md"}, {"B": "no-such-page.md"}, {"C": [{"D": "api.md"}, {"E": "x.md"}]}]
    cfg = _hooks.on_config({"docs_dir": str(DOCS), "nav": nav})
    assert cfg["nav"] == [{"A": "index.md"}, {"C": [{"D": "api.md"}]}]


def test_code_block_parser(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n```python\na = 1\n```\n<!-- test: skip -->\n```python\nraise SystemExit\n```\n"
        "<!-- test: slow -->\n\n```py\nb = 2\n```\n```bash\nls\n```\n"
        "- item\n\n    ```python\n    c = 3\n    ```\n"
    )
    blocks = code_blocks(page)
    assert [(src, mark) for _, src, mark in blocks] == [
        ("a = 1", None),
        ("raise SystemExit", "skip"),
        ("b = 2", "slow"),
        ("c = 3", None),
    ]
