"""The Python examples in docs/ run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["user-guide.md"])
def test_examples_run_in_order(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS / name)
    assert blocks, f"{name} has no python examples"
    namespace: dict = {}
    for k, block in enumerate(blocks):
        code = compile(block, f"{name}[block {k}]", "exec")
        exec(code, namespace)


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    readme = DOCS.parent / "README.md"
    (block,) = python_blocks(readme)
    exec(compile(block, "README.md", "exec"), {})
