"""The Python examples in docs/ run as written."""

from __future__ import annotations

import re
import runpy
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
    # One file, blocks in order: TorchScript needs real source files for scripted modules.
    script = tmp_path / "guide_examples.py"
    script.write_text("\n\n".join(blocks))
    runpy.run_path(str(script), run_name="__main__")


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    readme = DOCS.parent / "README.md"
    (block,) = python_blocks(readme)
    exec(compile(block, "README.md", "exec"), {})
