"""The Python examples in docs/ run as written and print what the docs show.

Convention of the docs: the output of a ``print(...)`` line is shown in the comment lines right
below it (a comment on the print line itself is prose). In a shown line, ``...`` stands for any
text (timings, measured counts); a shown line that is only ``...`` stands for any number of
lines. Every print in an example must show its output.
"""

from __future__ import annotations

import re
import runpy
import sys
from collections import defaultdict
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PRINT = re.compile(r"^\s*print\(")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def shown_outputs(script: str) -> dict[int, list[str]]:
    """Line number (1-based) of every print line -> the output lines shown below it."""
    lines = script.splitlines()
    shown: dict[int, list[str]] = {}
    for k, line in enumerate(lines):
        if not PRINT.match(line):
            continue
        below = []
        for following in lines[k + 1 :]:
            stripped = following.strip()
            if not stripped.startswith("#"):
                break
            below.append(stripped[2:] if stripped.startswith("# ") else stripped[1:])
        shown[k + 1] = below
    return shown


def _line_pattern(shown: str) -> re.Pattern:
    return re.compile(".*?".join(re.escape(part) for part in shown.split("...")) + r"\Z")


def matches(shown: list[str], printed: list[str]) -> bool:
    """Do the printed lines match the shown ones (``...`` wildcards, see module doc)?"""
    if not shown:
        return not printed
    head, rest = shown[0], shown[1:]
    if head.strip() == "...":
        return any(matches(rest, printed[k:]) for k in range(len(printed) + 1))
    return (
        bool(printed) and bool(_line_pattern(head).match(printed[0])) and matches(rest, printed[1:])
    )


def run_and_compare(script: str, path: Path, label: str) -> None:
    path.write_text(script)
    printed: dict[int, list[str]] = defaultdict(list)
    filename = str(path)

    def recording_print(*args, sep=" ", end="\n", file=None, flush=False):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != filename:
            frame = frame.f_back
        line = frame.f_lineno if frame is not None else 0
        printed[line].extend((sep.join(str(a) for a in args) + end).rstrip("\n").split("\n"))

    # One file, blocks in order: TorchScript needs real source files for scripted modules.
    runpy.run_path(filename, init_globals={"print": recording_print}, run_name="__main__")
    shown = shown_outputs(script)
    lines = script.splitlines()
    missing = [lines[n - 1].strip() for n, out in shown.items() if not out]
    assert not missing, f"{label}: these prints show no output below them: {missing}"
    for n, out in shown.items():
        got = printed.get(n, [])
        assert matches(out, got), (
            f"{label}, `{lines[n - 1].strip()}`:\nthe docs show\n  "
            + "\n  ".join(out)
            + "\nit printed\n  "
            + "\n  ".join(got)
        )
    assert set(printed) <= set(shown), f"{label}: output from lines that are not prints"


@pytest.mark.parametrize("name", ["user-guide.md"])
def test_examples_run_in_order_and_print_what_the_docs_show(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS / name)
    assert blocks, f"{name} has no python examples"
    run_and_compare("\n\n".join(blocks), tmp_path / "guide_examples.py", name)


def test_readme_example_runs_and_prints_what_it_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks(DOCS.parent / "README.md")
    run_and_compare(block, tmp_path / "readme_example.py", "README.md")


@pytest.mark.parametrize(
    ("shown", "printed", "ok"),
    [
        (["1"], ["1"], True),
        (["1"], ["2"], False),
        (["1"], ["1", "2"], False),
        (["took ... ms"], ["took 0.31 ms"], True),
        (["took ... ms"], ["took 0.31 s"], False),
        (["a", "...", "z"], ["a", "b", "c", "z"], True),
        (["a", "...", "z"], ["a", "z"], True),
        (["a", "...", "z"], ["a", "b"], False),
        ([], [], True),
    ],
)
def test_output_matching(shown, printed, ok):
    assert matches(shown, printed) is ok


def test_shown_outputs_are_the_comment_lines_below_a_print():
    script = "x = 1\nprint(x)  # prose\n# 1\n#   indented\ny = 2\n# not output\nprint(y)\n"
    assert shown_outputs(script) == {2: ["1", "  indented"], 7: []}
