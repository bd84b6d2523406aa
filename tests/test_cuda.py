"""Every public function and model of mmlearn on a CUDA device (skipped without one).

For each case the same computation runs on the CPU and on the GPU from the
same inputs and weights; the test checks that the outputs land on the GPU,
keep their dtype, and agree with the CPU within float32 tolerance (TF32 is
switched off for the comparison). Then:

* the losses run under ``torch.cuda.set_sync_debug_mode("error")``, which
  raises on any host-device synchronisation: the hot paths hold none;
* a small CLIP takes bfloat16 autocast training steps (``ClipLoss``, AdamW
  over :func:`mmlearn.param_groups`, the logit scale clamped after the step).

``bench/gpu_check.py`` runs this file. To exercise the harness itself on a
machine without a GPU, set ``MMLEARN_TEST_DEVICE=cpu``: the "GPU" side then
runs on the CPU too (the sync check is skipped).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import mmlearn
from mmlearn import functional as MF
from mmlearn import nn as mnn
from mmlearn.losses import ClipLoss, DistillationLoss, InfoNCELoss, NTXentLoss

TARGET = os.environ.get("MMLEARN_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    TARGET == "cuda" and not torch.cuda.is_available(),
    reason="no CUDA device (set MMLEARN_TEST_DEVICE=cpu to run the harness on the CPU)",
)


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 while comparing with the CPU (it rounds matmul inputs to 10 bits)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(_randn(*shape, seed=seed), dim=-1)


def _ids(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(1, vocab, (batch, length), generator=_gen(seed))
    ids[0, length // 2 :] = 0  # padding in the first row
    return ids


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


# name: (function of the inputs, CPU inputs). Modules are built once, on the CPU, and copied.
FUNCTIONS: dict[str, tuple[Callable, tuple]] = {
    "attention": (
        lambda q, k, v, m: MF.attention(q, k, v, m),
        (
            _randn(2, 3, 5, 8),
            _randn(2, 3, 6, 8, seed=1),
            _randn(2, 3, 6, 4, seed=2),
            torch.ones(5, 6, dtype=torch.bool).tril(),
        ),
    ),
    "multi_head_attention": (
        lambda x, wq, wk, wv, wo: MF.multi_head_attention(x, x, x, wq, wk, wv, wo, 4),
        (
            _randn(2, 5, 16),
            _randn(16, 16, seed=1),
            _randn(16, 16, seed=2),
            _randn(16, 16, seed=3),
            _randn(16, 16, seed=4),
        ),
    ),
    "feed_forward": (
        MF.feed_forward,
        (
            _randn(2, 5, 8),
            _randn(8, 32, seed=1),
            _randn(32, seed=2),
            _randn(32, 8, seed=3),
            _randn(8, seed=4),
        ),
    ),
    "info_nce": (
        lambda a, p, n: MF.info_nce(a, p, n, 0.1),
        (_unit(6, 8), _unit(6, 8, seed=1), _unit(6, 5, 8, seed=2)),
    ),
    "contrastive_objective": (
        lambda a, p: MF.contrastive_objective(a, p, temperature=0.1),
        (_unit(6, 8), _unit(6, 8, seed=1)),
    ),
    "clip_loss": (
        lambda i, t: MF.clip_loss(i, t, torch.tensor(1 / 0.07, device=i.device)),
        (_unit(6, 8), _unit(6, 8, seed=1)),
    ),
    "nt_xent": (lambda a, b: MF.nt_xent(a, b, 0.5), (_randn(6, 8), _randn(6, 8, seed=1))),
    "soft_target_loss": (
        lambda s, t: MF.soft_target_loss(s, t, 2.0),
        (_randn(8, 10), _randn(8, 10, seed=1)),
    ),
    "kd_kl_divergence": (
        lambda s, t: MF.kd_kl_divergence(s, t, 2.0),
        (_randn(8, 10), _randn(8, 10, seed=1)),
    ),
    "distillation_loss": (
        lambda s, t, y: MF.distillation_loss(s, t, y, 4.0, 0.9),
        (_randn(8, 10), _randn(8, 10, seed=1), torch.randint(0, 10, (8,), generator=_gen())),
    ),
    "attention_distillation_loss": (
        lambda s, t, m: MF.attention_distillation_loss([s], [t], kind="scores", mask=m),
        (
            _randn(2, 2, 4, 4),
            _randn(2, 2, 4, 4, seed=1),
            torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)[:, None, None, :],
        ),
    ),
    "feature_distillation_loss": (
        lambda s, t, w, m: MF.feature_distillation_loss(s, t, weight=w, mask=m),
        (
            _randn(2, 5, 8),
            _randn(2, 5, 12, seed=1),
            _randn(8, 12, seed=2),
            torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool),
        ),
    ),
}


def first(module: torch.nn.Module, *inputs) -> torch.Tensor:
    """The first output of a module that returns a tuple (or a FusionOutput-like first field)."""
    return module(*inputs)[0]


def _modules() -> dict[str, tuple[torch.nn.Module, Callable, tuple]]:
    """name: (module, how to call it and pick a tensor output, CPU inputs)."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=_gen())
    ids = _ids(2, 6, 20)
    return {
        "MultiHeadAttention": (
            mnn.MultiHeadAttention(16, 4),
            lambda m, x: m(x, x, x)[0],
            (_randn(2, 5, 16),),
        ),
        "MultiHeadAttention explicit": (
            mnn.MultiHeadAttention(16, 4, fused=False),
            lambda m, x: m(x, x, x, need_weights=True)[1],
            (_randn(2, 5, 16),),
        ),
        "FeedForward": (mnn.FeedForward(16, 32), lambda m, x: m(x), (_randn(2, 5, 16),)),
        "PositionalEncoding": (mnn.PositionalEncoding(16), lambda m, x: m(x), (_randn(2, 5, 16),)),
        "TransformerEncoder": (mnn.TransformerEncoder(16, 4, 32, 2), first, (_randn(2, 5, 16),)),
        "VisionTransformer": (mnn.VisionTransformer(32, 8, 3, 16, 4, 1, 32), first, (images,)),
        "TextTransformer": (mnn.TextTransformer(20, 16, 4, 1, 32, 6), first, (ids,)),
        "SmallConvEncoder": (
            mnn.SmallConvEncoder(1, 8, 16),
            lambda m, x: m(x),
            (torch.rand(2, 1, 8, 8, generator=_gen()),),
        ),
        "CLIPModel": (
            mnn.make_small_clip(20, 6, num_layers=1),
            lambda m, x, i: m(x, i)[1],
            (torch.rand(2, 1, 8, 8, generator=_gen()), ids),
        ),
        "MultimodalTransformer": (
            mnn.MultimodalTransformer(
                20, 3, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_length=6, gated=True
            ),
            first,
            (images, ids),
        ),
        "UnimodalBaseline": (
            mnn.UnimodalBaseline(
                20, 3, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_length=6
            ),
            first,
            (images, ids),
        ),
        "ImageCaptioner": (
            mnn.ImageCaptioner(
                20, bos_id=1, eos_id=2, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_length=6
            ),
            first,
            (images, ids),
        ),
    }


MODULE_NAMES = [
    "MultiHeadAttention",
    "MultiHeadAttention explicit",
    "FeedForward",
    "PositionalEncoding",
    "TransformerEncoder",
    "VisionTransformer",
    "TextTransformer",
    "SmallConvEncoder",
    "CLIPModel",
    "MultimodalTransformer",
    "UnimodalBaseline",
    "ImageCaptioner",
]


@pytest.fixture(scope="module")
def modules() -> dict:
    """Built once per run, only when the tests are not skipped."""
    built = _modules()
    assert sorted(built) == sorted(MODULE_NAMES)
    return built


def _check_parity(cpu_out: torch.Tensor, device_out: torch.Tensor) -> None:
    assert device_out.device.type == torch.device(TARGET).type
    assert device_out.dtype == cpu_out.dtype
    torch.testing.assert_close(device_out.cpu(), cpu_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_on_the_device_matches_the_cpu(name):
    function, inputs = FUNCTIONS[name]
    expected = function(*inputs)
    got = function(*_to(inputs, TARGET))
    for cpu_out, device_out in zip(
        torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(got), strict=True
    ):
        _check_parity(cpu_out, device_out)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_on_the_device_matches_the_cpu(name, modules):
    module, call, inputs = modules[name]
    module.eval()
    expected = call(module, *inputs)
    moved = _copy_to(module, TARGET)
    _check_parity(expected, call(moved, *_to(inputs, TARGET)))


def _copy_to(module: torch.nn.Module, device: str) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).to(device)


def test_losses_make_no_host_sync_on_the_gpu():
    if TARGET != "cuda":
        pytest.skip("sync debug mode needs CUDA")
    images, texts = _to((_unit(6, 8), _unit(6, 8, seed=1)), "cuda")
    student, teacher = _to((_randn(8, 10), _randn(8, 10, seed=1)), "cuda")
    labels = torch.randint(0, 10, (8,), device="cuda")
    hidden = _randn(2, 5, 8).cuda()
    mask = torch.ones(2, 5, dtype=torch.bool, device="cuda")
    scale = torch.tensor(1 / 0.07, device="cuda")
    owner = ClipLoss().cuda()
    attention = mnn.MultiHeadAttention(8, 2).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [
            MF.clip_loss(images, texts, scale),
            owner(images, texts),
            ClipLoss(learnable=False).cuda()(images, texts, scale),
            MF.distillation_loss(student, teacher, labels, 4.0, 0.9),
            DistillationLoss(4.0, 0.9)(student, teacher, labels),
            InfoNCELoss(0.1)(images, texts),
            NTXentLoss(0.5)(images, texts),
            MF.feature_distillation_loss(hidden, hidden + 1, mask=mask),
            attention(hidden, hidden, hidden, mask=mask[:, None, None, :])[0].sum(),
        ]
        sum(losses).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss).item() for loss in losses)


def test_bfloat16_autocast_clip_training_step():
    if TARGET == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    torch.manual_seed(0)
    model = mnn.make_small_clip(20, 6, num_layers=1).to(TARGET)
    loss_fn = ClipLoss(learnable=False)
    optimizer = torch.optim.AdamW(mmlearn.param_groups(model, 0.01), lr=1e-2)
    images = torch.rand(16, 1, 8, 8, generator=_gen()).to(TARGET)
    ids = _ids(16, 6, 20).to(TARGET)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = []
    for _ in range(5):
        with torch.autocast(device_type=torch.device(TARGET).type, dtype=torch.bfloat16):
            image_features, text_features, scale = model(images, ids)
            loss = loss_fn(image_features, text_features, scale)
        assert loss.dtype == torch.bfloat16 or TARGET == "cpu"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mmlearn.clamp_logit_scales_(model)
        losses.append(loss.float().item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.device.type == torch.device(TARGET).type, name
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert model.logit_scale.item() <= math.log(100) + 1e-6


def test_training_helpers_keep_the_run_on_the_device_and_match_the_cpu():
    """train_steps / train_on_indices hand the batch indices over on the model's device;
    digits_student builds its student there, and the run agrees with the CPU's."""
    from mmlearn.distill import digits_student
    from mmlearn.train import train_on_indices, train_steps

    inputs = _randn(48, 64).to(TARGET)
    labels = (inputs[:, :8].mean(1) > 0).long()
    seen: list[torch.device] = []

    def batch_loss(model: torch.nn.Module, index: torch.Tensor) -> torch.Tensor:
        seen.append(index.device)
        return F.cross_entropy(model(inputs[index]), labels[index])

    model = torch.nn.Linear(64, 2).to(TARGET)
    optimizer = torch.optim.AdamW(mmlearn.param_groups(model, 0.01), lr=1e-2)
    train_steps(model, 48, batch_loss, optimizer, steps=3, batch_size=8)
    train_on_indices(model, 48, batch_loss, epochs=1, batch_size=16, lr=1e-2)
    assert len(seen) == 6 and all(d.type == torch.device(TARGET).type for d in seen)
    student = digits_student(inputs, labels, seed=0, hidden=8, epochs=5)
    cpu_student = digits_student(inputs.cpu(), labels.cpu(), seed=0, hidden=8, epochs=5)
    assert next(student.parameters()).device.type == torch.device(TARGET).type
    for p, q in zip(student.parameters(), cpu_student.parameters(), strict=True):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)
