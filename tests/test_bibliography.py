"""book/references.bib parses as BibTeX, with one entry per key.

A merge can drop an entry's closing brace or bring in a key twice; Sphinx then
reports it only at the end of a long book build, or silently takes one copy.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"
ENTRY_KEY = re.compile(r"^@\w+\{([^,\s]+),", re.MULTILINE)


def test_every_entry_parses():
    from pybtex.database import parse_file

    entries = parse_file(str(BIB)).entries
    assert len(entries) == len(ENTRY_KEY.findall(BIB.read_text(encoding="utf-8")))


def test_no_key_is_defined_twice():
    counts = Counter(ENTRY_KEY.findall(BIB.read_text(encoding="utf-8")))
    assert not [key for key, n in counts.items() if n > 1]


def test_a_missing_closing_brace_is_an_error(tmp_path):
    from pybtex.database import parse_file
    from pybtex.scanner import PybtexSyntaxError

    broken = tmp_path / "broken.bib"
    broken.write_text("@misc{a,\n  title = {A}\n\n@misc{b,\n  title = {B}\n}\n", encoding="utf-8")
    with pytest.raises(PybtexSyntaxError):
        parse_file(str(broken))
