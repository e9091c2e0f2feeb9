"""The docs stand on their own: every .md file they name is in the repository, and every
`docs/science.md §N` that the code and docs cite is a section of that page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
MD_PATH = re.compile(r"(?<![\w/.-])((?:\.\.?/)?[\w./-]*[\w-]\.md)\b")
SECTION = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", re.M)
CITATION = re.compile(r"science\.md\]?\(?(?:science\.md\))? §(\d+(?:\.\d+)?)")


def _named_md_paths(text: str) -> set[str]:
    text = re.sub(r"https?://\S+", "", text)  # links to other sites are not files of this repository
    return set(MD_PATH.findall(text))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_md_file_a_doc_names_exists(doc: Path) -> None:
    missing = [name for name in sorted(_named_md_paths(doc.read_text(encoding="utf-8")))
               if not (doc.parent / name).is_file() and not (REPO / name).is_file()]
    assert not missing, f"{doc.relative_to(REPO)} names {missing}, which are not in the repository"


def test_the_path_check_can_fail(tmp_path: Path) -> None:
    """The same rule on a made-up doc: a named file that is absent is reported, a present one is not."""
    names = _named_md_paths("See [x](docs/science.md), `../shared/practices.md` and https://e.org/a.md")
    assert names == {"docs/science.md", "../shared/practices.md"}
    assert (REPO / "docs/science.md").is_file() and not (REPO / "docs" / "../shared/practices.md").is_file()


def test_every_cited_section_of_science_md_exists() -> None:
    sections = set(SECTION.findall((REPO / "docs" / "science.md").read_text(encoding="utf-8")))
    assert {"0", "9.1", "10.4", "14"} <= sections
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml"], cwd=REPO, capture_output=True,  # noqa: S603, S607
                           text=True, check=True).stdout.split()
    bad = []
    for name in files:
        path = REPO / name
        if not path.is_file():
            continue
        for n in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            if n not in sections:
                bad.append(f"{name}: §{n}")
    assert not bad, f"citations of sections docs/science.md does not have: {bad}"
