"""The README and docs/ stand alone: every relative link in them points at a file of this
repository (and, into a Markdown file, at one of its headings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The document without code blocks and code spans, where brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def relative_links(document: Path) -> list[str]:
    text = prose(document.read_text())
    links = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [link for link in links if not _EXTERNAL.match(link)]


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    return {anchor(h) for h in _HEADING.findall(_FENCE.sub("", document.read_text()))}


def test_the_documents_are_found_and_link_somewhere():
    assert ROOT / "docs" / "architecture.md" in DOCUMENTS
    assert "docs/architecture.md" in relative_links(ROOT / "README.md")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(document: Path):
    broken = []
    for link in relative_links(document):
        path_part, _, fragment = link.partition("#")
        target = (document.parent / path_part).resolve() if path_part else document
        if ROOT not in target.parents and target != ROOT:
            broken.append(f"{link}: outside the repository")
        elif not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.name}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Packages and who imports whom", "packages-and-who-imports-whom"),
        ("3-D Secure: `requires_action`", "3-d-secure-requires_action"),
        ("Ops: grpcurl", "ops-grpcurl"),
    ],
)
def test_a_heading_is_linked_by_githubs_anchor(heading: str, expected: str):
    assert anchor(heading) == expected
