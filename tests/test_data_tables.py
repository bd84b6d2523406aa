"""The data tables under mmlearn/data/tables/ that the book's figures are drawn from.

Every row must name its source: a BibTeX key that exists in book/references.bib,
so that no number in a figure is without a citation.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from mmlearn.data import load_table, table_names

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted((ROOT / "mmlearn" / "data" / "tables").glob("*.csv"))
BIB_KEY = re.compile(r"^@\w+\{\s*([^,\s]+)\s*,", re.MULTILINE)


def bib_keys(text: str) -> set[str]:
    return set(BIB_KEY.findall(text))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


KEYS = bib_keys((ROOT / "book" / "references.bib").read_text(encoding="utf-8"))


def test_there_are_tables():
    assert len(TABLES) >= 3


def test_bib_key_parser():
    assert bib_keys("@article{a2020x,\n title={t}}\n@misc{ b ,\n}") == {"a2020x", "b"}


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name)
def test_every_row_cites_a_source_in_the_bibliography(path: Path):
    rows = read_rows(path)
    assert rows, f"{path.name} is empty"
    assert "source" in rows[0], f"{path.name} has no 'source' column"
    missing = [
        (index, row["source"])
        for index, row in enumerate(rows, start=2)
        if row["source"].strip() not in KEYS
    ]
    assert not missing, f"{path.name}: (line, source) not a BibTeX key: {missing}"


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name)
def test_rows_are_complete_and_years_plausible(path: Path):
    for line, row in enumerate(read_rows(path), start=2):
        assert None not in row, f"{path.name}:{line} has more fields than the header"
        if "year" in row:
            assert 1900 <= int(row["year"]) <= 2100, f"{path.name}:{line}"


def test_model_scale_numbers_are_positive_and_compute_only_where_published():
    rows = read_rows(ROOT / "mmlearn" / "data" / "tables" / "model_scale.csv")
    for row in rows:
        assert float(row["parameters"]) > 0
        for column in ("training_tokens", "training_flops"):
            assert row[column] == "" or float(row[column]) > 0
    by_model = {row["model"]: row for row in rows}
    # Brown et al. (2020), Table D.1: 175B parameters, 300B tokens, 3.14e23 FLOPs.
    assert float(by_model["GPT-3"]["training_flops"]) == 3.14e23


def test_the_checker_detects_an_unknown_source(tmp_path: Path):
    table = tmp_path / "bad.csv"
    table.write_text("year,event,source\n2020,something,no-such-key-2099\n", encoding="utf-8")
    rows = read_rows(table)
    assert [row["source"] for row in rows if row["source"] not in KEYS] == ["no-such-key-2099"]


def test_load_table_reads_every_shipped_table():
    assert table_names() == [path.name for path in TABLES]
    for path in TABLES:
        assert len(load_table(path.name)) == len(read_rows(path))


def test_load_table_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        load_table("no_such_table.csv")


def test_open_vlm_benchmarks_are_well_formed():
    rows = read_rows(ROOT / "mmlearn" / "data" / "tables" / "open_vlm_benchmarks.csv")
    keys = [(row["model"], row["benchmark"], row["setting"]) for row in rows]
    assert len(keys) == len(set(keys)), "a (model, benchmark, setting) appears twice"
    for line, row in enumerate(rows, start=2):
        assert re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", row["release"]), line
        assert row["release_source"] in KEYS, (line, row["release_source"])
        assert float(row["value"]) > 0, line
        assert row["setting"] and row["metric"], line


def test_open_vlm_benchmarks_quote_their_sources():
    rows = read_rows(ROOT / "mmlearn" / "data" / "tables" / "open_vlm_benchmarks.csv")
    value = {(r["model"], r["benchmark"], r["setting"]): r["value"] for r in rows}
    # Values checked by hand against the cited model cards and READMEs, as written there.
    assert value["Qwen2-VL-7B", "MMMU", "val"] == "54.1"
    assert value["Llama 3.2 11B Vision Instruct", "MMMU", "val, CoT, 0-shot"] == "50.7"
    llava_mme = "as listed in the model zoo (one number; subset not stated)"
    assert value["LLaVA-1.5-7B", "MME", llava_mme] == "1510.7"
    assert value["InternVL2-8B", "MMMU", "val"] == "49.3"


def test_load_table_can_keep_numbers_as_written():
    as_written = load_table("open_vlm_benchmarks.csv", dtype={"value": str})
    assert {"83.0", "1238"} <= set(as_written.value)
    assert "1238" not in set(load_table("open_vlm_benchmarks.csv").value.astype(str))
