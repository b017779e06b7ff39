"""README.md and docs/**/*.md link only to what exists: every relative link and image names a file of the
repository, and every `#anchor` a heading of its target (GitHub's slugs). Absolute http(s) links are not fetched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
IMAGES = REPO / "docs" / "images"
MAX_IMAGE_BYTES = 150_000

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SKIPPED_SCHEMES = re.compile(r"^(https?:|mailto:|ftp:)", re.I)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    """Every link and image target outside code (fenced blocks and inline code spans)."""
    found = []
    for line in prose_lines(text):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append(match.group(1).strip("<>"))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    """The links of a markdown file that lead nowhere, each with the reason."""
    broken = []
    for target in links(path.read_text()):
        if SKIPPED_SCHEMES.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.is_file() and resolved.suffix == ".md" and anchor.lower() not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_every_relative_link_and_image_resolves(doc):
    assert broken_links(doc) == []


def test_the_readme_lists_every_docs_page():
    listed = {(REPO / target.partition("#")[0]).resolve() for target in links((REPO / "README.md").read_text())}
    pages = set((REPO / "docs").glob("*.md"))
    assert pages and pages <= listed, sorted(str(page.relative_to(REPO)) for page in pages - listed)


def test_the_pictures_are_small():
    pictures = sorted(IMAGES.glob("*.png"))
    assert pictures, "docs/images holds no PNG; `python benchmarks/readme_pictures.py` draws them"
    assert {picture.name: picture.stat().st_size for picture in pictures
            if picture.stat().st_size >= MAX_IMAGE_BYTES} == {}


def test_the_checker_reports_missing_files_images_and_headings(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## NNI's tuners (Random, TPE) on `resnas` spaces\n\n"
                                               "## Twice\n\n## Twice\n")
    (tmp_path / "docs" / "pic.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[fine](docs/page.md) [fine anchor](docs/page.md#nnis-tuners-random-tpe-on-resnas-spaces)\n"
        "[repeated](docs/page.md#twice-1) ![fine image](docs/pic.png) [web](https://example.org/missing.md)\n"
        "[own heading](#top) [titled](docs/page.md \"Title\")\n"
        "[missing](docs/nowhere.md) ![missing image](docs/images/gone.png)\n"
        "[bad anchor](docs/page.md#no-such-heading) [bad own anchor](#nothing)\n"
        "`[in code](docs/code.md)`\n\n```\n[in a block](docs/block.md)\n```\n\n# Top\n")
    assert broken_links(readme) == [
        f"docs/nowhere.md: no file {tmp_path / 'docs' / 'nowhere.md'}",
        f"docs/images/gone.png: no file {tmp_path / 'docs' / 'images' / 'gone.png'}",
        "docs/page.md#no-such-heading: no heading #no-such-heading in page.md",
        "#nothing: no heading #nothing in README.md",
    ]
    # From a page in docs/ the same targets are relative to docs/.
    (tmp_path / "docs" / "other.md").write_text("[up](../README.md#top) [sibling](page.md) [wrong](docs/page.md)\n")
    assert broken_links(tmp_path / "docs" / "other.md") == [
        f"docs/page.md: no file {tmp_path / 'docs' / 'docs' / 'page.md'}"]
