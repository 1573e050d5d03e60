"""The docs stand alone: the clause catalogue matches the code, and nothing points outside.

A clone of the repository is all a contributor or an auditor has, so the clause catalogue
lives in docs/requirements.md (kept equal to baomi/clauses.py here) and no tracked file may
point at files beside or above the checkout.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from baomi.clauses import CLAUSES

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "docs" / "requirements.md"

# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "/" + "work/")


def _table_rows(text: str) -> list[tuple[str, ...]]:
    """(ID, title, what it asks, source) of every summary-table row of a clause."""
    rows = re.findall(r"^\| (R-[A-Z]+) \|([^|]+)\|([^|]+)\|([^|]+)\|$", text, flags=re.MULTILINE)
    return [tuple(cell.strip() for cell in row) for row in rows]


def _headings(text: str) -> list[tuple[str, str]]:
    """(ID, title) of every `### R-XXX 标题` section."""
    return re.findall(r"^### (R-[A-Z]+) (\S+)\s*$", text, flags=re.MULTILINE)


def test_requirements_lists_exactly_the_clauses_of_the_code() -> None:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    assert _table_rows(text) == [(c.id, c.title, c.summary, c.source) for c in CLAUSES.values()]
    assert _headings(text) == [(c.id, c.title) for c in CLAUSES.values()]


def test_requirements_gives_each_clause_its_source_text() -> None:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    assert len(sections) == len(CLAUSES)
    for section in sections:
        cid = section.split()[0]
        quotes = re.findall(r"^- (?:000|001) [^:]+: \S", section, flags=re.MULTILINE)
        assert quotes, f"{cid}: no quoted source (a line '- 000 … : text' or '- 001 … : text')"
        assert "Control:" in section, f"{cid}: says nothing about what the product does"


def test_no_tracked_text_points_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--", "*.md", "*.py"], cwd=ROOT,
                            capture_output=True, check=True).stdout
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    assert ROOT / "README.md" in files, "git ls-files listed no README.md: not a checkout?"
    offenders = []
    for path in files:
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
