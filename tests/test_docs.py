"""The README and docs/ point only at files in this repository: a link a reader follows opens something."""

from __future__ import annotations

import re

from tests.stack import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_opens_a_file_in_the_repository():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.name}: {target}")
    assert broken == []


def test_no_document_sends_the_reader_outside_the_repository():
    outside = [
        f"{doc.name}: {m.group(0)}"
        for doc in DOCS
        for m in re.finditer(r"\.\./[\w./-]+|\bshared/DESIGN\.md", doc.read_text())
    ]
    assert outside == []


def test_code_cites_the_repositorys_own_docs():
    """Docstrings and comments point at the README and docs/, not at a design note outside the repository."""
    code = [p for folder in ("app", "workers", "client", "bench", "tests") for p in (ROOT / folder).rglob("*.py")]
    cited = [f"{p.relative_to(ROOT)}" for p in code if "DESIGN.md" in p.read_text() and p.name != "test_docs.py"]
    assert cited == []
