"""One small training loop, and a command line that trains a CLIP on the digits.

From a notebook::

    history = train(model, loader, partial(clip_step, loss_fn=ClipLoss(learnable=False),
                                           device=device), optimizer, epochs=5)

For data held in memory, two wrappers build the loader and the optimiser
around :func:`train`: :func:`train_on_indices` (epochs of shuffled index
batches, AdamW over :func:`mmlearn.optim.param_groups`, a one-cycle schedule)
and :func:`train_steps` (a fixed number of steps on batches drawn with
replacement). Their ``batch_loss(model, index)`` is all a notebook writes.

From a shell, alone or with several processes (DDP: gloo on the CPU, NCCL on GPUs)::

    python -m mmlearn.train clip --data digits --epochs 5 --batch-size 64 --out runs/clip
    torchrun --nproc_per_node=2 -m mmlearn.train clip --data digits --epochs 5 \\
        --batch-size 64 --out runs/clip-ddp

``--batch-size`` is the *global* batch: with N processes each one takes
``batch_size / N`` samples per step, and the gathering
:class:`mmlearn.losses.ClipLoss` lets every image see all ``batch_size``
texts, so one process and N processes train the same recipe. The run ends
with the zero-shot accuracy on the test split, a safetensors checkpoint
(``model.safetensors``) and ``metrics.json`` (with ``--supervised-ceiling``
also the accuracy of the same image tower trained with labels).

The default recipe: 15 epochs of batches of 32 whose images are shifted by
up to a pixel (``--shift 1``), AdamW (fused) at a peak learning rate of 2e-3
with a 10 % linear warm-up and a cosine decay, a one-layer text Transformer.
It came out of a small search on the digits: one change at a time, seeds 0,
1, 2, ``python -m mmlearn.train clip --data digits --seed S --out DIR
[change]`` with ``torch.set_num_threads(1)`` on a shared 2-core machine,
test zero-shot accuracy as mean ± std over the seeds, and the training
CPU seconds of one run (``train_cpu_seconds``, without data loading and
evaluation). The sweep ran before the optimiser was fused (fusing changes
only the rounding; in a micro-benchmark it cut the optimiser's share of a
25 ms step from about 4.3 to 0.9 ms)::

    change from the previous default           accuracy %     CPU s  (per seed %)
    (10 epochs, no shift: previous default)    98.33 ± 0.48    8.0   98.06 98.89 98.06
    --epochs 15                                98.06 ± 0.56   12.0
    --lr 3e-3                                  98.33 ± 0.96    8.4
    --embed-dim 64                             98.43 ± 0.89    8.2
    --init-temperature 0.1                     98.15 ± 0.32    8.7
    --batch-size 16 --epochs 5                 97.59 ± 1.53    6.5
    --shift 1                                  97.78 ± 0.96    8.4
    --shift 1 --epochs 12 --lr 3e-3            98.33 ± 0.48   10.0
    --shift 1 --epochs 15 (new default)        98.61 ± 0.48   12.3   98.33 98.33 99.17
    --shift 1 --epochs 20                      98.98 ± 0.16   16.8   98.89 99.17 98.89
    --shift 1 --epochs 15 --batch-size 48 --lr 3e-3
                                               98.43 ± 0.42   10.2
    --shift 1 --epochs 20 --batch-size 64      98.15 ± 0.64   11.9
    --shift 1 --epochs 20 --batch-size 64 --lr 4e-3
                                               98.33 ± 0.28   12.0

Then the new default with the fused optimiser, and the previous default
(its code as it was) run at the same time on the same machine::

    new default (fused AdamW)                  98.89 ± 0.28   12.2   99.17 98.61 98.89
    previous default                           98.33 ± 0.48    9.2   98.06 98.89 98.06

What mattered: the shift augmentation *together with* more epochs. At 10
epochs the shifted digits cost accuracy; at 15 and 20 epochs they are what lifts the CLIP past its
previous default, while 15 epochs without the shift do not. Small batches
matter too (the loss sits at ``log(batch)`` until the two towers first line
up; batches of 32 leave that plateau within the first epoch, and batches of
48 or 64 for the same number of samples did not do better), and so do the
decaying learning rate and one text layer instead of two (the captions are
short templates; it is also cheaper). No change measurable within the noise
(about half a point over 3 seeds, i.e. two of the 360 test images): the
learning rate 3e-3, a 64-wide shared space, an initial temperature of 0.1
(and, in an earlier search, a wider conv tower). The cost of a step is
mostly per-operation overhead on these tiny tensors (the image and the text
tower about a third each, the unfused optimiser a sixth), so the training
time grows with the number of samples seen.
``--supervised-ceiling`` trains the same image tower with labels (AdamW at a
constant learning rate, same epochs and shift) for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, TensorDataset
from tqdm.auto import tqdm

from mmlearn.data.digits import DigitsSplit, load_digits_captions, prompts_en
from mmlearn.data.tokenizer import WordTokenizer
from mmlearn.distill import accuracy, fit_classifier, random_shift
from mmlearn.distributed import init_distributed, rank_and_world_size
from mmlearn.losses.contrastive import ClipLoss
from mmlearn.metrics import zero_shot_accuracy, zero_shot_classifier
from mmlearn.nn.clip import CLIPModel, SmallConvEncoder, make_small_clip
from mmlearn.optim import param_groups
from mmlearn.utils import seed_everything

__all__ = [
    "ShiftedDigits",
    "clip_step",
    "digits_zero_shot_accuracy",
    "main",
    "supervised_ceiling",
    "train",
    "train_on_indices",
    "train_steps",
    "warmup_cosine",
]

Batch = Sequence[torch.Tensor]


def _mean_over_ranks(value: torch.Tensor) -> float:
    """Average a scalar tensor over all processes and read it (one host sync)."""
    _, world_size = rank_and_world_size()
    total = value.detach().to(torch.float64).reshape(1)
    if world_size > 1:
        dist.all_reduce(total)
    return total.item() / world_size


def _check_same_batches(loader: DataLoader, device: torch.device) -> None:
    """Every rank must take batches of the same size, and as many (the gather needs it)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return
    mine = torch.tensor([loader.batch_size or -1, len(loader)], device=device)
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine)
    sizes = [tuple(int(v) for v in t.tolist()) for t in everyone]
    if len(set(sizes)) > 1:
        raise ValueError(
            "every process must use the same local batch size and number of batches "
            f"(the features of all ranks are gathered into one global batch); got (local batch "
            f"size, batches) per rank: {sizes}. Split the global batch evenly and use "
            "DistributedSampler with drop_last=True"
        )


def train(
    model: nn.Module,
    loader: DataLoader,
    compute_loss: Callable[[nn.Module, Batch], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: bool = True,
    scheduler: LRScheduler | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Train for ``epochs`` passes over ``loader``; return the history.

    The loop never reads a tensor back to the host inside an epoch: the
    running loss stays on the device and is read (and averaged over the
    ranks) once per epoch, so a GPU is never made to wait mid-epoch. After
    every ``optimizer.step()`` the logit scales of the model are clamped in
    place (:func:`mmlearn.optim.clamp_logit_scales_`, as open_clip does), then
    ``scheduler.step()`` and ``after_step()`` are called when given.

    Args:
        model: the model (or its ``DistributedDataParallel`` wrapper).
        loader: yields batches; with a ``DistributedSampler`` its epoch is set
            each pass, so every epoch is shuffled differently.
        compute_loss: ``compute_loss(model, batch) -> scalar loss`` (see :func:`clip_step`).
        optimizer: updates the model's parameters.
        epochs: number of passes.
        eval_fn: called after each epoch with the model (in eval mode, without
            gradients); its ``{name: value}`` are appended to the history.
        progress: show one tqdm bar over all steps (only on rank 0); its loss is the
            previous epoch's mean.
        scheduler: a learning-rate scheduler stepped after every optimiser step.
        after_step: called after every step (for example ``loss_fn.clamp_logit_scale_``
            when a learnable :class:`~mmlearn.losses.ClipLoss` owns the scale).

    Returns:
        ``{"loss": [mean training loss of each epoch (averaged over ranks)],
        "step_loss": [this rank's loss at every step, in order], **eval values}``;
        the step losses are read back once per epoch, like the mean.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if len(loader) == 0:
        raise ValueError(
            "loader must yield at least one batch (is the batch larger than the "
            "data set with drop_last=True?)"
        )
    rank, _ = rank_and_world_size()
    device = next(model.parameters()).device
    _check_same_batches(loader, device)
    clampers = [
        module.clamp_logit_scale_
        for module in model.modules()
        if callable(getattr(module, "clamp_logit_scale_", None))
    ]
    history: dict[str, list[float]] = {"loss": [], "step_loss": []}
    bar = tqdm(total=epochs * len(loader), disable=not progress or rank != 0, desc="train")
    for epoch in range(epochs):
        for part in (loader.sampler, loader.dataset):  # reshuffle / redraw augmentations
            if callable(getattr(part, "set_epoch", None)):
                part.set_epoch(epoch)
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        step_losses = []
        for batch in loader:
            loss = compute_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for clamp in clampers:  # clamp_logit_scales_(model), without the module walk
                clamp()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            total += loss.detach()
            step_losses.append(loss.detach())
            bar.update()
        history["loss"].append(_mean_over_ranks(total / len(loader)))
        history["step_loss"] += torch.stack(step_losses).double().tolist()
        bar.set_postfix(epoch=epoch + 1, loss=f"{history['loss'][-1]:.4f}")
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                for name, value in eval_fn(model).items():
                    history.setdefault(name, []).append(value)
    bar.close()
    return history


def clip_step(
    model: nn.Module, batch: Batch, loss_fn: ClipLoss, device: torch.device
) -> torch.Tensor:
    """The CLIP loss of one ``(images, ids, valid)`` batch; the model owns the logit scale."""
    images, ids, valid = (tensor.to(device) for tensor in batch)
    image_features, text_features, logit_scale = model(images, ids, valid)
    return loss_fn(image_features, text_features, logit_scale)


def train_on_indices(
    model: nn.Module,
    num_samples: int,
    batch_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.01,
    seed: int = 0,
    warmup: float = 0.1,
    drop_last: bool = False,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """The book's recipe on data held in memory: :func:`train` over shuffled index batches.

    Each epoch draws a permutation of ``range(num_samples)`` (from a CPU
    generator seeded with ``seed``) and cuts it into batches of
    ``batch_size`` indices; ``batch_loss(model, index)`` gets each batch as a
    ``long`` tensor on the model's device and returns the scalar loss, so the
    data can be tensors on the device, a list of strings, or both. The
    optimiser is AdamW over :func:`mmlearn.optim.param_groups` (frozen
    parameters left out; no decay on biases, norms, scales and gates), the
    learning rate a one-cycle schedule peaking at ``lr`` after a ``warmup``
    fraction of the steps; the logit scales are clamped after every step.

    Returns:
        :func:`train`'s history: the mean loss of each epoch, and the values of
        ``eval_fn`` after each epoch.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        range(num_samples),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        drop_last=drop_last,
    )
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    # train() checks epochs and the loader's length; the schedule only needs a valid count
    steps = max(1, epochs * len(loader)) if isinstance(epochs, int) else 1
    scheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=warmup)
    return train(
        model,
        loader,
        _indices_on_device(batch_loss, next(model.parameters()).device),
        optimizer,
        epochs,
        eval_fn=eval_fn,
        progress=progress,
        scheduler=scheduler,
    )


class _Indices(Dataset):
    """The indices ``0 .. num_samples - 1``; a batch of them is the index tensor itself,
    so the loader does not split it into Python ints and collate them back."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: torch.Tensor) -> torch.Tensor:
        return indices


def _as_is(batch: torch.Tensor) -> torch.Tensor:
    return batch


class _BatchesWithReplacement(Sampler[torch.Tensor]):
    """``steps`` batches of ``batch_size`` indices, each ``torch.randint(num_samples, ...)``."""

    def __init__(self, num_samples: int, batch_size: int, steps: int, seed: int) -> None:
        self.num_samples, self.batch_size, self.steps = num_samples, batch_size, steps
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.steps):
            size = (self.batch_size,)
            yield torch.randint(self.num_samples, size, generator=self.generator)


def train_steps(
    model: nn.Module,
    num_samples: int,
    batch_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    scheduler: LRScheduler | None = None,
    progress: bool = False,
    after_step: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """:func:`train` for ``steps`` steps, each on ``batch_size`` indices drawn with replacement.

    The recipe of the book's small experiments: step ``t`` draws
    ``torch.randint(num_samples, (batch_size,))`` from a CPU generator seeded
    with ``seed`` (so a run repeats exactly on any device, and the global
    random state is left to the model, for example its dropout), and
    ``batch_loss(model, index)`` gets the indices as a ``long`` tensor on the
    model's device. Everything else is :func:`train`'s: the logit scales
    clamped after each ``optimizer.step()``, then ``scheduler.step()`` and
    ``after_step()`` (for example a probe that records a metric every few steps).

    Returns:
        :func:`train`'s history; ``"loss"`` holds the mean loss over the steps and
        ``"step_loss"`` the loss of each step (for a loss curve).
    """
    for name, value in (("num_samples", num_samples), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    loader = DataLoader(
        _Indices(num_samples),
        batch_sampler=_BatchesWithReplacement(num_samples, batch_size, steps, seed),
        collate_fn=_as_is,
        generator=torch.Generator().manual_seed(seed),  # not the global RNG
    )
    return train(
        model,
        loader,
        _indices_on_device(batch_loss, next(model.parameters()).device),
        optimizer,
        epochs=1,
        progress=progress,
        scheduler=scheduler,
        after_step=after_step,
    )


def _indices_on_device(
    batch_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """``batch_loss`` with each batch of indices moved to ``device`` first."""

    def step(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        return batch_loss(model, index.to(device))

    return step


@torch.no_grad()
def digits_zero_shot_accuracy(
    model: CLIPModel, tokenizer: WordTokenizer, split: DigitsSplit, device: torch.device
) -> float:
    """Zero-shot accuracy on a digits split: each class is the ensemble of its prompts."""
    was_training = model.training
    model.eval()

    def encode(texts: list[str]) -> torch.Tensor:
        ids, valid = tokenizer.encode(texts)
        return model.encode_text(ids.to(device), valid.to(device))

    classes = zero_shot_classifier(encode, [prompts_en(digit) for digit in range(10)])
    features = model.encode_image(split.images.to(device))
    model.train(was_training)
    return zero_shot_accuracy(features, classes, split.labels.to(device))


class ShiftedDigits(Dataset):
    """``(image, ids, valid)`` samples whose 8x8 images are shifted by up to ``max_shift`` pixels.

    A digit moved by one pixel is the same digit: the shift teaches the image
    tower that, and is the augmentation that matters most on these tiny
    images. Each sample's shift is drawn from ``(seed, epoch, index)`` alone
    (:meth:`set_epoch` redraws them), so every process of a distributed run
    shifts a sample exactly as a single process would. Batches are built in
    one vectorised gather (``__getitems__``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor,
        seed: int,
        max_shift: int = 1,
    ) -> None:
        self.images = F.pad(images, (max_shift,) * 4)
        self.ids, self.valid = ids, valid
        self.seed, self.max_shift = seed, max_shift
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.offsets = torch.randint(0, 2 * self.max_shift + 1, (len(self), 2), generator=generator)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        index = torch.as_tensor(indices)
        size = self.images.shape[-1] - 2 * self.max_shift
        grid = torch.arange(size)
        rows = (self.offsets[index, 0, None] + grid)[:, None, :, None]
        cols = (self.offsets[index, 1, None] + grid)[:, None, None, :]
        channels = torch.arange(self.images.shape[1])[None, :, None, None]
        shifted = self.images[index[:, None, None, None], channels, rows, cols]
        return list(zip(shifted, self.ids[index], self.valid[index], strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([index])[0]


def _digits_loader(
    split: DigitsSplit,
    tokenizer: WordTokenizer,
    local_batch: int,
    seed: int,
    rank: int,
    world_size: int,
    max_shift: int = 0,
) -> DataLoader:
    """Pre-tokenised ``(images, ids, valid)`` batches of this rank.

    The same :class:`DistributedSampler` for one process and for N: each epoch
    it shuffles the indices with ``seed + epoch`` and rank r takes every N-th
    one from position r. So the k-th global batch (the union of the ranks'
    k-th local batches) holds the same samples whatever N is, and N
    processes train exactly the recipe of one.
    """
    ids, valid = tokenizer.encode(split.captions_en)
    dataset = (
        ShiftedDigits(split.images, ids, valid, seed, max_shift)
        if max_shift
        else TensorDataset(split.images, ids, valid)
    )
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.0
) -> LambdaLR:
    """Linear warm-up over ``warmup * total_steps`` steps, then a cosine decay to 0.

    Step it after every optimiser step (:func:`train` does, given ``scheduler=``).
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mmlearn.train", description="Train the book's small models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    clip = commands.add_parser("clip", help="a CLIP-style dual encoder (zero-shot on test)")
    clip.add_argument("--data", choices=["digits"], default="digits")
    clip.add_argument("--epochs", type=int, default=15)
    clip.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="global batch size, split evenly over the processes",
    )
    clip.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    clip.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="AdamW decay of the weight matrices (mmlearn.param_groups)",
    )
    clip.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="cosine",
        help="learning rate: constant, or a cosine decay to 0",
    )
    clip.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        help="with --schedule cosine: fraction of the steps of linear warm-up",
    )
    clip.add_argument(
        "--shift",
        type=int,
        default=1,
        help="augmentation: shift each image by up to this many pixels",
    )
    clip.add_argument(
        "--text-layers",
        type=int,
        default=1,
        help="layers of the text Transformer (the captions are short templates)",
    )
    clip.add_argument("--width", type=int, default=16, help="channels of the conv tower")
    clip.add_argument("--embed-dim", type=int, default=32)
    clip.add_argument(
        "--init-temperature",
        type=float,
        default=0.07,
        help="initial tau; the logit scale starts at 1 / tau (CLIP: 0.07)",
    )
    clip.add_argument(
        "--local-loss", action="store_true", help="each process computes only its rows of the loss"
    )
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument(
        "--supervised-ceiling",
        action="store_true",
        help="also train the image tower as a plain classifier on the same "
        "split (the accuracy that zero-shot can at best hope to approach)",
    )
    clip.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not 0 < args.lr < math.inf:
        parser.error("--epochs, --batch-size and --lr must be positive (and finite)")
    if not 0.01 <= args.init_temperature <= 1:
        parser.error("--init-temperature must lie in [0.01, 1] (a logit scale of 1 to 100)")
    return args


def run_clip(args: argparse.Namespace) -> dict:
    """Train a small CLIP on the digits as ``args`` say; rank 0 writes the results."""
    rank, world_size, device = init_distributed()
    if args.batch_size % world_size:
        raise ValueError(
            f"--batch-size ({args.batch_size}) must be divisible by the number "
            f"of processes ({world_size})"
        )
    seed_everything(args.seed)
    data = load_digits_captions(seed=args.seed)
    prompts = [p for digit in range(10) for p in prompts_en(digit)]
    tokenizer = WordTokenizer.from_texts(data["train"].captions_en + prompts)
    loader = _digits_loader(
        data["train"],
        tokenizer,
        args.batch_size // world_size,
        args.seed,
        rank,
        world_size,
        args.shift,
    )
    max_length = tokenizer.encode(data["train"].captions_en + prompts)[0].shape[1]
    model = make_small_clip(
        len(tokenizer),
        max_length,
        embed_dim=args.embed_dim,
        width=args.width,
        num_layers=args.text_layers,
    ).to(device)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / args.init_temperature))
    trained = model
    if world_size > 1:
        trained = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    loss_fn = ClipLoss(learnable=False, gather_with_grad=True, local_loss=args.local_loss)
    # One fused kernel for all parameters: on these tiny models the per-tensor
    # loop of the default AdamW takes a sixth of each step on a CPU.
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, fused=fused)
    scheduler = None
    if args.schedule == "cosine":
        scheduler = warmup_cosine(optimizer, args.epochs * len(loader), args.warmup)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = train(
        trained,
        loader,
        partial(clip_step, loss_fn=loss_fn, device=device),
        optimizer,
        args.epochs,
        scheduler=scheduler,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = {}
    if rank == 0:
        metrics = {
            "data": args.data,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "world_size": world_size,
            "device": str(device),
            "local_loss": args.local_loss,
            "train_loss": history["loss"],
            "logit_scale": model.scale().item(),
            "val_zero_shot_accuracy": digits_zero_shot_accuracy(
                model, tokenizer, data["val"], device
            ),
            "test_zero_shot_accuracy": digits_zero_shot_accuracy(
                model, tokenizer, data["test"], device
            ),
            "train_seconds": round(seconds, 2),
            "train_cpu_seconds": round(cpu_seconds, 2),
            "shift": args.shift,
            "text_layers": args.text_layers,
            "width": args.width,
            "lr": args.lr,
            "warmup": args.warmup,
            "schedule": args.schedule,
            "vocabulary": tokenizer.itos,
            "max_length": max_length,
            "embed_dim": args.embed_dim,
        }
        if args.supervised_ceiling:
            metrics["supervised_test_accuracy"] = supervised_ceiling(args, data, device)
        _save(model, metrics, args.out)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def supervised_ceiling(
    args: argparse.Namespace, data: dict[str, DigitsSplit], device: torch.device
) -> float:
    """Test accuracy of the CLIP's image tower trained with labels (same split, epochs, shift)."""
    seed_everything(args.seed)
    classifier = SmallConvEncoder(1, width=args.width, out_dim=10).to(device)
    augment = partial(random_shift, max_shift=args.shift) if args.shift else None
    fit_classifier(
        classifier,
        data["train"].images.to(device),
        data["train"].labels.to(device),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=augment,
        seed=args.seed,
    )
    return accuracy(classifier, data["test"].images.to(device), data["test"].labels.to(device))


def _save(model: nn.Module, metrics: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    save_file(state, str(out / "model.safetensors"))
    (out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    shown = {k: v for k, v in metrics.items() if k != "vocabulary"}
    shown["train_loss"] = [round(v, 4) for v in metrics["train_loss"]]
    print(json.dumps(shown, indent=2))
    print(f"saved {out / 'model.safetensors'} and {out / 'metrics.json'}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Entry point of ``python -m mmlearn.train``."""
    return run_clip(_parse(argv))


if __name__ == "__main__":
    main()
