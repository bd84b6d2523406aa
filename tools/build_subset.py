"""Build a few pages of the book on their own, with the book's configuration.

    python tools/build_subset.py notebooks/ch04/self_attention book/ch02/transformer

For authors: it catches MyST mistakes (bad directives, unknown glue keys,
broken math) and cell errors in the pages you are writing without building
the whole book. It builds in a temporary folder (printed at the end) with a
table of contents holding the preface, your pages and the bibliography;
references into pages outside the subset are reported as warnings there and
are expected. The real check is `make book`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINKED = ["book", "notebooks", "mmlearn", "tools", "_config.yml", "data"]


def main(pages: list[str]) -> int:
    if not pages:
        print(__doc__)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="book-subset-"))
    for name in LINKED:
        if (ROOT / name).exists():
            (workdir / name).symlink_to(ROOT / name)
    chapters = [{"file": page.removesuffix(".ipynb").removesuffix(".md")} for page in pages]
    chapters.append({"file": "book/appendix/bibliography"})
    toc = {"format": "jb-book", "root": "book/index", "chapters": chapters}
    (workdir / "_toc.yml").write_text(yaml.safe_dump(toc, allow_unicode=True), encoding="utf-8")
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(workdir),
        "--builder",
        "html",
        "-W",
        "--keep-going",
    ]
    status = subprocess.run(command, cwd=workdir).returncode
    print(f"\nBuilt in {workdir}/_build/html (exit status {status})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
