"""docs/design.md: every citation of it in the code names a section it has, and no module
cites a design document the repository does not hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
CITATION = re.compile(r'docs/design\.md,\s+"([^"]+)"')
SOURCES = ("imapjmap", "devservers", "tests", "bench", "scripts")


def _sources() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py") if p != Path(__file__))


def sections() -> set[str]:
    return {line[3:].strip() for line in DESIGN.read_text().splitlines() if line.startswith("## ")}


def test_the_document_has_the_sections_the_code_relies_on() -> None:
    assert {"Layers", "Ids", "States", "Freshness", "Writes", "Push", "The seam"} <= sections()


def test_every_citation_names_a_section() -> None:
    cited = {
        (str(path.relative_to(ROOT)), name)
        for path in _sources()
        for name in CITATION.findall(path.read_text())
    }
    assert len(cited) >= 10
    unknown = sorted((path, name) for path, name in cited if name not in sections())
    assert unknown == []


def test_no_module_cites_a_document_outside_the_repository() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if re.search(r"\bDESIGN\.md\b|reference/[a-z-]+\.md", path.read_text())
    ]
    assert stale == []
