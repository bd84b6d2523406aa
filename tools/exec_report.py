"""A tiny Sphinx extension: after the build, write every notebook's execution time.

myst-nb records, for each executed notebook, how long it ran (this is what the
``{nb-exec-table}`` directive shows). This extension writes the same data to
``_build/exec_times.json`` so that ``tools/check_exec_times.py`` and the tests
can enforce the time budget of every notebook.
"""

from __future__ import annotations

import json
from pathlib import Path


def _write_exec_times(app, exception) -> None:
    if exception is not None:
        return
    records = {}
    nb_metadata = getattr(app.env, "nb_metadata", {})  # filled by myst-nb's NbMetadataCollector
    for docname, metadata in nb_metadata.items():
        exec_data = metadata.get("exec_data")
        if exec_data:
            records[docname] = {
                "runtime_s": exec_data.get("runtime"),
                "method": exec_data.get("method"),
                "succeeded": exec_data.get("succeeded"),
            }
    out = Path(app.outdir).parent / "exec_times.json"
    out.write_text(json.dumps(records, indent=2, ensure_ascii=False, sort_keys=True))


def setup(app):
    app.connect("build-finished", _write_exec_times)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
