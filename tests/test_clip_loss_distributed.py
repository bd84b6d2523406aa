"""ClipLoss under torch.distributed: 2 gloo processes on the CPU against one process.

Each of the 2 ranks holds half of a global batch. We check, for every
supported setting of ``ClipLoss``:

* the loss value: equal to the one-process loss on the global batch
  (``local_loss=False``), or a share whose mean over the ranks is that loss
  (``local_loss=True``);
* the gradient that reaches each rank's features: ``world_size`` times the
  one-process gradient of those rows when the gather carries gradients, 1
  times without (exactly what the ``ClipLoss`` docstring states);
* the end result that matters: after ``DistributedDataParallel`` averages
  them, the parameter gradients equal the one-process gradients;
* the gather itself: its backward (a reduce-scatter, or the all-reduce
  fallback) gives each rank the one-process gradient of its rows, and
  unequal local batch sizes raise a ``ValueError`` that names them.
"""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import mmlearn.distributed as distributed
from mmlearn.distributed import gather_features
from mmlearn.functional import clip_loss
from mmlearn.losses import ClipLoss

WORLD_SIZE = 2
LOCAL_BATCH = 3
DIM = 4
SCALE = 1 / 0.07
SETTINGS = {  # name: (gather_with_grad, local_loss, gradient factor on the features)
    "global": (True, False, WORLD_SIZE),
    "local": (True, True, WORLD_SIZE),
    "no-grad-gather": (False, False, 1),
}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The same global batch on every process: normalised float64 features."""
    generator = torch.Generator().manual_seed(0)
    shape = (WORLD_SIZE * LOCAL_BATCH, DIM)
    images = F.normalize(torch.randn(shape, generator=generator, dtype=torch.float64), dim=1)
    texts = F.normalize(torch.randn(shape, generator=generator, dtype=torch.float64), dim=1)
    return images, texts


class _Towers(nn.Module):
    """Two linear 'encoders' so that DDP has parameters to average."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.image = nn.Parameter(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
        self.text = nn.Parameter(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))

    def forward(self, images, texts):
        return F.normalize(images @ self.image, dim=1), F.normalize(texts @ self.text, dim=1)


def _rows(rank: int) -> slice:
    return slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)


def _gather_weights() -> torch.Tensor:
    """Rank r's loss is ``sum(weights[r] * gathered ** 2)``: a different loss on each rank."""
    generator = torch.Generator().manual_seed(2)
    return torch.randn(WORLD_SIZE, WORLD_SIZE * LOCAL_BATCH, DIM, generator=generator)


def _gather_gradient(rank: int) -> tuple[torch.Tensor, int]:
    """This rank's gradient through the differentiable gather, and the reduce-scatters run."""
    calls = []
    reduce_scatter = distributed._reduce_scatter_single

    def counted(*args, **kwargs):
        calls.append(1)
        return reduce_scatter(*args, **kwargs)

    distributed._reduce_scatter_single = counted
    try:
        features = _global_batch()[0][_rows(rank)].float().requires_grad_()
        (_gather_weights()[rank] * gather_features(features) ** 2).sum().backward()
    finally:
        distributed._reduce_scatter_single = reduce_scatter
    return features.grad, len(calls)


def _gather_checks(rank: int) -> dict:
    out = {}
    out["gather/reduce-scatter"] = _gather_gradient(rank)
    saved = distributed.BACKENDS_WITHOUT_REDUCE_SCATTER
    distributed.BACKENDS_WITHOUT_REDUCE_SCATTER = frozenset({dist.get_backend()})
    try:
        out["gather/all-reduce"] = _gather_gradient(rank)
    finally:
        distributed.BACKENDS_WITHOUT_REDUCE_SCATTER = saved
    for with_grad in (True, False):  # rank 0 has LOCAL_BATCH rows, rank 1 one fewer
        try:
            gather_features(torch.zeros(LOCAL_BATCH - rank, DIM), with_grad=with_grad)
            out[f"mismatch/{with_grad}"] = ""
        except ValueError as error:
            out[f"mismatch/{with_grad}"] = str(error)
    return out


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        images, texts = _global_batch()
        out = {}
        for name, (with_grad, local_loss, _) in SETTINGS.items():
            image = images[_rows(rank)].clone().requires_grad_()
            text = texts[_rows(rank)].clone().requires_grad_()
            loss_fn = ClipLoss(
                init_logit_scale=math.log(SCALE),
                learnable=True,
                gather_with_grad=with_grad,
                local_loss=local_loss,
            ).double()
            loss = loss_fn(image, text)
            loss.backward()
            out[name] = (loss.detach(), image.grad, text.grad, loss_fn.logit_scale.grad)
            model = DistributedDataParallel(_Towers())
            image_features, text_features = model(images[_rows(rank)], texts[_rows(rank)])
            ClipLoss(
                init_logit_scale=math.log(SCALE),
                learnable=False,
                gather_with_grad=with_grad,
                local_loss=local_loss,
            )(image_features, text_features).backward()
            out[name + "/ddp"] = (model.module.image.grad, model.module.text.grad)
        gathered = gather_features(torch.full((2, 1), float(rank)), with_grad=False)
        out["gathered"] = gathered
        out.update(_gather_checks(rank))
        torch.save(out, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Run the 2 ranks once (each saves its results to a file); every test reads them."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(
        _worker,
        args=(_free_port(), str(folder)),
        nprocs=WORLD_SIZE,
        join=True,
        start_method="spawn",
    )
    return {
        rank: torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)
    }


def _single_process(images, texts):
    """Loss and feature gradients of the one-process loss on the global batch."""
    images = images.clone().requires_grad_()
    texts = texts.clone().requires_grad_()
    log_scale = torch.tensor(math.log(SCALE), dtype=torch.float64, requires_grad=True)
    loss = clip_loss(images, texts, log_scale.exp())
    loss.backward()
    return loss.detach(), images.grad, texts.grad, log_scale.grad


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(SETTINGS))
def test_loss_and_feature_gradients_match_one_process(results, name):
    loss, image_grad, text_grad, scale_grad = _single_process(*_global_batch())
    factor = SETTINGS[name][2]
    local_loss = SETTINGS[name][1]
    losses = torch.stack([results[rank][name][0] for rank in range(WORLD_SIZE)])
    if local_loss:
        torch.testing.assert_close(losses.mean(), loss)
        assert not torch.allclose(losses[0], losses[1])  # each rank has its own share
    else:
        torch.testing.assert_close(losses, loss.expand(WORLD_SIZE))
    for rank in range(WORLD_SIZE):
        _, got_image, got_text, _ = results[rank][name]
        torch.testing.assert_close(got_image, factor * image_grad[_rows(rank)])
        torch.testing.assert_close(got_text, factor * text_grad[_rows(rank)])
    scale_grads = torch.stack([results[rank][name][3] for rank in range(WORLD_SIZE)])
    torch.testing.assert_close(scale_grads.mean(), scale_grad)


@pytest.mark.distributed
@pytest.mark.parametrize(
    "name, factor", [("global", 1.0), ("local", 1.0), ("no-grad-gather", 1 / WORLD_SIZE)]
)
def test_ddp_parameter_gradients(results, name, factor):
    images, texts = _global_batch()
    model = _Towers()
    clip_loss(*model(images, texts), SCALE).backward()
    for rank in range(WORLD_SIZE):
        image_grad, text_grad = results[rank][name + "/ddp"]
        torch.testing.assert_close(image_grad, factor * model.image.grad)
        torch.testing.assert_close(text_grad, factor * model.text.grad)


@pytest.mark.distributed
def test_gather_puts_the_ranks_in_order(results):
    expected = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    for rank in range(WORLD_SIZE):
        torch.testing.assert_close(results[rank]["gathered"], expected)


@pytest.mark.distributed
@pytest.mark.parametrize("path, reduce_scatters", [("reduce-scatter", 1), ("all-reduce", 0)])
def test_gather_gradient_matches_one_process(results, path, reduce_scatters):
    features = _global_batch()[0].float().requires_grad_()
    weights = _gather_weights()
    sum((weights[rank] * features**2).sum() for rank in range(WORLD_SIZE)).backward()
    for rank in range(WORLD_SIZE):
        grad, calls = results[rank][f"gather/{path}"]
        torch.testing.assert_close(grad, features.grad[_rows(rank)])
        assert calls == reduce_scatters


@pytest.mark.distributed
@pytest.mark.parametrize("with_grad", [True, False])
def test_unequal_local_batches_raise_a_clear_error(results, with_grad):
    for rank in range(WORLD_SIZE):
        message = results[rank][f"mismatch/{with_grad}"]
        assert f"[{LOCAL_BATCH}, {LOCAL_BATCH - 1}] rows per rank" in message


def test_local_loss_without_a_gradient_gather_is_rejected():
    with pytest.raises(ValueError, match="gather_with_grad=True"):
        ClipLoss(local_loss=True, gather_with_grad=False)


def test_gather_is_the_identity_without_a_process_group():
    features = torch.randn(3, 2, requires_grad=True)
    assert gather_features(features) is features
    assert gather_features(features, with_grad=False) is features
