"""Every relative link and anchor of the documentation resolves.

The README is a short page that links into ``docs/``; a page renamed or a
heading reworded must not leave a link that leads nowhere.  Anchors are
GitHub's: the heading in lower case, punctuation dropped, spaces turned into
hyphens, ``-1``, ``-2`` appended to repeats.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testing.processes import REPO

PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "ARCHITECTURE.md",
    REPO / "SECURITY.md",
    REPO / "bench" / "README.md",
    REPO / "deploy" / "README.md",
    REPO / "charts" / "workqueue" / "README.md",
]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without code blocks: a ``[x](y)`` in code is not a link."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, repeat = base, 0
        while name in found:
            repeat += 1
            name = f"{base}-{repeat}"
        found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    """``target: why`` for each relative link of ``page`` that leads nowhere."""
    broken = []
    text = CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8")))
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(
                f"{target}: no {destination.relative_to(REPO) if destination.is_relative_to(REPO) else destination}"
            )
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_readme_links_every_page_of_docs():
    linked = {
        (REPO / target.partition("#")[0]).resolve() for target in LINK.findall(prose((REPO / "README.md").read_text()))
    }
    unlinked = [page.name for page in sorted((REPO / "docs").glob("*.md")) if page.resolve() not in linked]
    assert unlinked == [], "a page of docs/ that the README does not lead to is a page no one finds"


def test_the_checker_sees_a_broken_link_a_broken_anchor_and_ignores_code(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Time limits and `consumer_timeout`\n\n## Twice\n\n## Twice\n")
    page.write_text(
        "# Page\n\n[gone](missing.md) [ok](other.md#time-limits-and-consumer_timeout) [twice](other.md#twice-1)\n"
        "[bad anchor](other.md#nowhere) [self](#page) [web](https://example.com/x#y)\n"
        "`[code](missing-too.md)`\n\n```\n[fenced](missing-three.md)\n```\n"
    )
    assert sorted(broken_links(page)) == sorted(
        [f"missing.md: no {tmp_path / 'missing.md'}", "other.md#nowhere: no heading with the anchor #nowhere"]
    )
