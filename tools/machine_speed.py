"""How fast this machine runs the book's kind of work, against the machine the budgets assume.

    python tools/machine_speed.py        # prints seconds per step and the speed factor

The notebook time budgets (tools/check_exec_times.py: 60 s, 90 s for a
training-heavy notebook, 15 minutes of wall time for the whole book) were set
on the 2-core development machine. Shared virtual machines of that kind do not
run at one speed: on 2026-12-05 the step timed here took 0.080 s at 10:05 and
0.129 s at 11:31 on the same idle machine (two copies at once: 0.134 and
0.138 s, so the slowdown was not the book's own parallelism), and the mini
LLaVA notebook took 72-75 s in one clean build and 92 s in the next. A build
on a slow hour would fail budgets that the same notebooks meet an hour
earlier.

So the build times one fixed workload, a training step of the section 3.4
mini LLaVA (batch 32, 1 thread; the heaviest kind of work in the book), in as
many processes at once as it executes notebooks, before and after executing
them, and takes the slowest of these times (an idle-machine mean, 0.103 s,
underestimated the build's own slowdown: its notebooks took 1.42 times as long
in total as in the previous clean build, the mean said 1.29). The budget check
scales every budget by ``speed_factor = measured / REFERENCE_S_PER_STEP``,
never below 1: a
faster machine gets no extra time, a slower one gets exactly the time it
measurably needs for the same work. ``REFERENCE_S_PER_STEP`` is the fastest
value measured on the development machine, so the budgets stay as tight as the
machine they were set on.
"""

from __future__ import annotations

import json
import multiprocessing
import time

import torch

from mmlearn.data import ChatTokenizer, chat_text, collate_chat, encode_chat, make_shapes_chat
from mmlearn.nn import (
    TransformerDecoder,
    VisionLanguageModel,
    VisionTransformer,
    chat_loss,
    make_projector,
)
from mmlearn.optim import param_groups

REFERENCE_S_PER_STEP = 0.080


def seconds_per_step(steps: int = 20, warmup: int = 5) -> float:
    """Mean time of ``steps`` stage-2 training steps of a small mini LLaVA."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        data = make_shapes_chat(2000, seed=0, turns=3, image_size=24)
        tokenizer = ChatTokenizer.from_texts(
            chat_text([(q, a) for q, a, _ in c]) for c in data.conversations
        )
        vit = VisionTransformer(24, 8, 3, 48, num_heads=4, num_layers=1, d_ff=96)
        with torch.no_grad():
            features = vit(data.images)[0][:, 1:]
        lm = TransformerDecoder(
            len(tokenizer), 64, num_heads=4, num_layers=2, d_ff=256, max_length=112,
            tie_embeddings=True, pad_id=tokenizer.pad_id,
        )  # fmt: skip
        model = VisionLanguageModel(
            vit.requires_grad_(False), make_projector("mlp", 48, 64), lm,
            tokenizer.image_id, tokenizer.eot_id, tokenizer.pad_id,
        )  # fmt: skip
        examples = [encode_chat(tokenizer, [(q, a) for q, a, _ in c]) for c in data.conversations]
        optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-3)
        generator = torch.Generator().manual_seed(0)

        def step() -> None:
            rows = torch.randint(len(examples), (32,), generator=generator).tolist()
            ids, labels = collate_chat([examples[i] for i in rows], tokenizer.pad_id)
            output = model(ids, image_features=features[rows], labels=labels)
            loss = chat_loss(output.logits, output.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_num_threads(threads)


def parallel_seconds_per_step(copies: int) -> float:
    """:func:`seconds_per_step` in ``copies`` processes at once (as the build runs its
    notebooks), the slowest copy's time: memory traffic of a neighbour slows a step too."""
    if copies < 2:
        return seconds_per_step()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, like a kernel
    with context.Pool(copies) as pool:
        return max(pool.starmap(seconds_per_step, [()] * copies))


def speed_factor(measured_s_per_step: float) -> float:
    """How many times longer this machine needs than the reference, at least 1."""
    if not measured_s_per_step > 0:
        raise ValueError(f"measured_s_per_step must be positive, got {measured_s_per_step!r}")
    return max(1.0, measured_s_per_step / REFERENCE_S_PER_STEP)


if __name__ == "__main__":
    measured = parallel_seconds_per_step(2)
    print(json.dumps({"s_per_step": round(measured, 4), "speed_factor": speed_factor(measured)}))
