"""No typed results: every result-like number in the prose is glued or cited.

The book's rule (CONTRIBUTING.md, "Honest numbers") is that a number which
states a result is computed by a notebook and glued into the text, or comes
from a source cited in the same sentence. This test scans the Markdown cells
of every notebook and every page under ``book/`` for result-like numbers:

* percentages (``97%``, ``3 个百分点``, ``百分之五``);
* ratios and speed-ups (``5 倍``, ``3× faster``);
* decimals next to a metric word (``损失 2.31``, ``accuracy 0.97``, ``Spearman 0.966``).

A sentence with a ``{cite:...}`` role is exempt (the number is the cited
source's), and so is a Markdown table whose caption or rows cite a source or
name ``mmlearn/data/tables``. Code, math, inline code, links and MyST roles
(``{glue:text}`key:.1%``` included) are removed before scanning. What remains
and matches is either fixed in the text or listed in ``ALLOWED`` with the
reason it is not a result.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Numbers that are settings or definitions, not results. Each entry is
# (path relative to the repository, a regular expression matched against the
# offending sentence, why it is allowed). Keep it small: a result belongs in glue.
ALLOWED: list[tuple[str, str, str]] = [
    # Settings of an experiment (noise rates, masking rates, sizes), not its outcome.
    ("book/ch08/challenges.md", r"带 40% 错误标签", "label-noise rate set by the notebook"),
    ("notebooks/ch02/multimodal_challenges.ipynb", r"只隐藏 5%", "masking rate, a setting"),
    ("notebooks/ch03/distillation_methods.ipynb", r"4 倍于训练集", "transfer-set size, a setting"),
    ("notebooks/ch03/multimodal_inference.ipynb", r"批大了 256 倍", "batch 256 vs 1, a setting"),
    ("notebooks/ch03/multimodal_training.ipynb", r"调大 10 倍", "a suggested setting"),
    ("notebooks/ch03/multimodal_training.ipynb", r"接近 100%", "the ceiling to look for"),
    ("notebooks/ch04/distillation_math.ipynb", r"最大概率超过 95%", "selection threshold"),
    ("notebooks/ch08/challenges_lab.ipynb", r"20% 与 40% 的标签错误|^60% 时为", "noise rates"),
    ("notebooks/ch08/challenges_lab.ipynb", r"只保留 5%|带 40% 错误", "settings"),
    ("notebooks/ch08/challenges_lab.ipynb", r"仍有 60% 是正确的|超过 50%", "noise-rate arithmetic"),
    # Consequences of a formula derived on the page, not measurements.
    ("notebooks/ch04/attention_cost.ipynb", r"变成 4 倍|内存变为 16 倍", "memory grows as L^2"),
    ("notebooks/ch04/attention_cost.ipynb", r"最多快约 2 倍", "a causal mask skips half"),
    ("notebooks/ch07/huggingface_clip.ipynb", r"约 1\.39", "ln 4, the uniform loss"),
    # A fact about reference code (google-research/simclr sums the two directions).
    ("notebooks/ch04/contrastive_math.ipynb", r"SimCLR 的损失是这个公式的 2 倍", "code fact"),
    # The labelled fractions of the pretrain-then-fine-tune experiment are its settings.
    ("book/ch03/multimodal_transformer.md", r"1%、10%、100% 的标注", "label fractions"),
    (
        "notebooks/ch03/multimodal_pretraining.ipynb",
        r"1%、10%、100%|^\| (?:1|10|100)%（\d+ 题）|取问答训练集的 1%|(?:1|10|100)% (?:的)?标注"
        r"|1% 处",
        "label fractions",
    ),
    ("notebooks/ch03/multimodal_pretraining.ipynb", r"1/200 = 0\.5%", "chance level of R@1"),
    # The mini LLaVA: a setting of its generated scenes; POPE's balanced yes-ratio.
    ("notebooks/ch03/mllm_llava.ipynb", r"出现概率 55%", "colour bias of the generated scenes"),
    ("notebooks/ch03/mllm_llava.ipynb", r"(?:高于|低于|理想值) 50%", "balanced yes/no"),
    # A hypothetical gap in an exercise about reading benchmark scores.
    ("book/ch07/datasets.md", r"2 个百分点的差距小于一个标准差", "hypothetical in an exercise"),
]

# Offenders in pages this test's author did not own when it was written; the
# lead fixes them. An entry that no longer matches fails the test, so fixed
# entries are removed instead of lingering.
KNOWN_OFFENDERS: list[tuple[str, str]] = []

PERCENT = (
    r"(?<![\w.])\d+(?:\.\d+)?\s*[%％]|\d+(?:\.\d+)?\s*个百分点"
    r"|百分之[零一二三四五六七八九十百\d]+"
)
RATIO = r"(?<![\w.])\d+(?:\.\d+)?\s*倍|(?<![\w.])\d+(?:\.\d+)?\s*[×xX]\s*(?:faster|slower|speed)"
METRIC = (
    r"(?:损失|loss|困惑度|perplexity|准确率|正确率|精度|accuracy|召回率|Recall@\d+|BLEU|CIDEr"
    r"|Spearman|相关系数|F1|误差|指数)[^。；！？\n\d]{0,12}?(?<![\w.@])\d+\.\d+(?![.\d])"
    r"(?!\s*(?:节|章))"  # "4.3 节" is a section, not a value
)
RESULT_LIKE = re.compile(f"{PERCENT}|{RATIO}|{METRIC}", re.IGNORECASE)
CITE = "\u27e8cite\u27e9"
# A chance level (1 / number of classes) is arithmetic, not a measurement.
CHANCE = re.compile(r"瞎猜|随机猜|chance", re.IGNORECASE)
TABLE_SOURCE = re.compile(r"mmlearn/data/tables|" + CITE)


@dataclass(frozen=True)
class Finding:
    path: str
    sentence: str

    def __str__(self) -> str:
        return f"{self.path}: {self.sentence}"


def _strip_fences(text: str) -> str:
    """Drop code and mermaid fences; keep the body of MyST directives such as ```{rubric}."""
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        match = re.match(r"(`{3,}|~{3,})(.*)", stripped)
        if fence is None and match:
            fence = match.group(1)
            keep = match.group(2).strip().startswith("{") and "code" not in match.group(2)
            fence = (fence, keep)
            continue
        if fence is not None and stripped.startswith(fence[0]) and stripped.strip() == fence[0]:
            fence = None
            continue
        if fence is None or fence[1]:
            out.append(line)
    return "\n".join(out)


def clean(text: str) -> str:
    """The prose of a Markdown text with math, code, links and roles taken out."""
    text = _strip_fences(text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.DOTALL)
    text = re.sub(r"(?<!\\)\$[^$\n]+?(?<!\\)\$", " ", text)
    text = re.sub(r"\{cite(?::\w+)?\}`[^`]*`", CITE, text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", " \u27e8role\u27e9 ", text)
    text = re.sub(r"`[^`\n]*mmlearn/data/tables[^`\n]*`", "mmlearn/data/tables", text)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"[（(][1-8]\.\d(?:\.\d)?[）)]", " ", text)  # a section number such as （5.2）
    return re.sub(r"https?://\S+", " ", text)


def _drop_exercise_prompts(text: str) -> str:
    """Drop the bodies of ``{exercise}`` directives: a prompt poses settings, it reports no
    result (solutions are scanned)."""
    return re.sub(r"(:{3,})\{exercise\}.*?\n\1\s*$", " ", text, flags=re.DOTALL | re.MULTILINE)


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line numbers of each block of Markdown table rows."""
    blocks, start = [], None
    for i, line in enumerate([*lines, ""]):
        is_row = line.lstrip().startswith("|")
        if is_row and start is None:
            start = i
        elif not is_row and start is not None:
            blocks.append((start, i - 1))
            start = None
    return blocks


def findings_in(text: str, path: str) -> list[Finding]:
    """Result-like numbers of one Markdown text that are neither glued nor cited."""
    lines = clean(_drop_exercise_prompts(text)).splitlines()
    sourced_rows: set[int] = set()
    for first, last in _tables(lines):
        context = "\n".join(lines[max(0, first - 3) : last + 4])
        if TABLE_SOURCE.search(context):
            sourced_rows.update(range(first, last + 1))
    found = []
    for number, line in enumerate(lines):
        if number in sourced_rows:
            continue
        for sentence in re.split(r"(?<=[。！？；])|(?<=[.;!?])\s", line):
            if CITE in sentence or CHANCE.search(sentence) or not RESULT_LIKE.search(sentence):
                continue
            if any(path == where and re.search(pattern, sentence) for where, pattern, _ in ALLOWED):
                continue
            found.append(Finding(path, sentence.strip()))
    return found


@functools.cache
def markdown_sources() -> tuple[tuple[str, str], ...]:
    """(relative path, Markdown text) of every page and every notebook Markdown cell."""
    sources = [
        (p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8"))
        for p in sorted((ROOT / "book").rglob("*.md"))
    ]
    for notebook in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        cells = nbformat.read(notebook, as_version=4).cells
        text = "\n\n".join(c.source for c in cells if c.cell_type == "markdown")
        sources.append((notebook.relative_to(ROOT).as_posix(), text))
    return tuple(sources)


@functools.cache
def all_findings() -> tuple[Finding, ...]:
    return tuple(f for path, text in markdown_sources() for f in findings_in(text, path))


def _is_known(finding: Finding) -> bool:
    return any(
        finding.path == path and re.search(pattern, finding.sentence)
        for path, pattern in KNOWN_OFFENDERS
    )


def test_no_typed_result_numbers():
    offenders = [str(f) for f in all_findings() if not _is_known(f)]
    assert not offenders, "result-like numbers neither glued nor cited:\n" + "\n".join(offenders)


def test_known_offenders_still_exist():
    findings = all_findings()
    stale = [
        (path, pattern)
        for path, pattern in KNOWN_OFFENDERS
        if not any(f.path == path and re.search(pattern, f.sentence) for f in findings)
    ]
    assert not stale, f"fixed: remove these from KNOWN_OFFENDERS: {stale}"


def test_allowed_entries_are_used():
    sources = dict(markdown_sources())
    unused = []
    for path, pattern, _ in ALLOWED:
        sentences = re.split(r"(?<=[。！？；])|\n", clean(sources.get(path, "")))
        if not any(re.search(pattern, s) and RESULT_LIKE.search(s) for s in sentences):
            unused.append((path, pattern))
    assert not unused, f"ALLOWED entries that match nothing: {unused}"


@pytest.mark.parametrize(
    "text",
    [
        "模型的精度是 97.2%。",
        "学生快了 5 倍。",
        "训练损失降到 2.31。",
        "It runs 3x faster than before.",
        "Spearman 相关为 0.966。",
        "| model | accuracy |\n|---|---|\n| ours | 91% |",
    ],
)
def test_scanner_flags_typed_results(text):
    assert findings_in(text, "page.md")


@pytest.mark.parametrize(
    "text",
    [
        "精度是 {glue:text}`acc:.1%`。",
        "DistilBERT 保留了 97% 的成绩 {cite:p}`sanh2019distilbert`。",
        "温度 $\\tau=0.07$ 时损失为 $2.9$。",
        "```python\nprint(f'{acc:.1%}')  # 97%\n```",
        "见 [链接](https://example.org/a%20b)。",
        "数据（来源：`mmlearn/data/tables/model_scale.csv`）\n\n"
        "| model | share |\n|---|---|\n| A | 50% |",
        "隐藏层有 64 个单元，学习率 0.01。",
    ],
)
def test_scanner_passes_glued_cited_and_non_results(text):
    assert not findings_in(text, "page.md")
