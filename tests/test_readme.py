"""The README's commands and Python examples work as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def test_readme_python_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert os.getcwd() == str(ROOT)
