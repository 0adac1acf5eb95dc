"""The docs name only errors that exist, with the parents they claim, and the error a situation
raises (issue 22: the user guide said ArtifactError where UnregisteredOpError is raised)."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest

import byoc_torch.errors

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
ERROR_NAME = re.compile(r"`([A-Z][A-Za-z]*(?:Error|Failure))`")
# "`ArtifactError` (a `ValueError`)": a claim about the hierarchy.
IS_A = re.compile(r"`([A-Z]\w*(?:Error|Failure))` \(an? `([A-Z]\w*)`")
# Errors of other projects the docs quote by name, with the project they belong to.
FOREIGN = {"InternalError": "TVM's (tvm.error.InternalError)"}


def _error_class(name: str) -> type | None:
    cls = getattr(byoc_torch.errors, name, None) or getattr(builtins, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _named(path: Path) -> list[str]:
    return ERROR_NAME.findall(path.read_text())


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_error_the_docs_name_exists(path):
    unknown = sorted({n for n in _named(path) if _error_class(n) is None and n not in FOREIGN})
    assert not unknown, f"{path.name} names errors that neither byoc_torch nor Python has"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_the_parents_the_docs_claim_are_the_hierarchy(path):
    for child, parent in IS_A.findall(path.read_text()):
        assert issubclass(_error_class(child), _error_class(parent)), f"{child} is no {parent}"


def test_every_byoc_torch_error_is_documented():
    guide = set(_named(ROOT / "docs" / "user-guide.md"))
    public = {n for n in byoc_torch.errors.__all__ if n != "ByocTorchError"}
    assert public - guide == set()


def test_an_unregistered_op_is_documented_as_the_error_the_runtime_raises():
    """Every docs paragraph about an op that is not registered names UnregisteredOpError and
    no other byoc_torch error; the runtime raises that type with that wording."""
    source = (ROOT / "runtime" / "subgraph.cc").read_text()
    assert re.search(r"TVM_FFI_THROW\(UnregisteredOpError\)[^;]*not registered in this process",
                     source, re.S)  # fmt: skip
    assert not issubclass(byoc_torch.errors.UnregisteredOpError, byoc_torch.errors.ArtifactError)
    found = 0
    for path in DOCS:
        for paragraph in re.split(r"\n\s*\n|\n(?=\* )", path.read_text()):
            if "not registered" not in paragraph or not ERROR_NAME.search(paragraph):
                continue
            found += 1
            raised = re.findall(r"(?:raises|else) `(\w+)`", paragraph)
            assert raised and set(raised) == {"UnregisteredOpError"}, (path.name, paragraph)
    assert found >= 2


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_one_limits_section_per_document(path):
    assert len(re.findall(r"^## Limits\b", path.read_text(), re.M)) <= 1
