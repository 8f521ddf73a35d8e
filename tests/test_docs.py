"""Citations stay inside the repository: nothing points at ``../shared`` (users never have it), and every
``docs/<name>.md`` citation names a file, and a section (``§N`` or a quoted heading), that exists."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"\.\./shared|/work/shared|\bspec §")
CITATION = re.compile(r'(?<![\w/.-])docs/([\w-]+\.md)`{0,2}(?:\s+§(\d+(?:\.\d+)*))?(?:\s+"([^"]+)")?')
OPS = "deltanet/ops/"  # being restructured on another branch: its citations are checked separately


def tracked_texts():
    """(path, text) of every git-tracked file except this one; binary files are skipped."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in names.splitlines():
        path = ROOT / name
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def outside_citations(in_ops: bool) -> list[str]:
    return [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in tracked_texts()
        if name.startswith(OPS) == in_ops
        for m in FORBIDDEN.finditer(text)
    ]


def test_nothing_outside_deltanet_ops_cites_shared():
    offenders = outside_citations(in_ops=False)
    assert not offenders, "cite docs/ instead of ../shared or a bare 'spec §':\n" + "\n".join(offenders)


def test_deltanet_ops_cites_no_shared():
    offenders = outside_citations(in_ops=True)
    assert not offenders, "deltanet/ops: cite docs/ instead of ../shared or a bare 'spec §':\n" + "\n".join(offenders)


def headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("#")]


def test_every_cited_doc_and_section_exists():
    missing = []
    for name, text in tracked_texts():
        for m in CITATION.finditer(text):
            doc, number, title = ROOT / "docs" / m.group(1), m.group(2), m.group(3)
            where = f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
            if not doc.is_file():
                missing.append(f"{where} (no such file)")
                continue
            found = headings(doc)
            if number and not any(re.match(rf"{re.escape(number)}\.?\s", h) for h in found):
                missing.append(f"{where} (no heading numbered {number})")
            if title and not any(title.lower() in h.lower() for h in found):
                missing.append(f'{where} (no heading "{title}")')
    assert not missing, "citations of docs/ that point nowhere:\n" + "\n".join(missing)
