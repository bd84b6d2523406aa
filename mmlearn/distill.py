"""A small, correct knowledge-distillation training helper (chapter 5.3).

:class:`KnowledgeDistiller` is the corrected form of the seed's listing 5.3:
it takes the labels it uses, weights the two terms with ``alpha``, scales
the soft term by ``T**2`` through :func:`mmlearn.functional.distillation_loss`
(``KLDivLoss(reduction="batchmean")``, not the default ``"mean"``), and keeps
the teacher frozen: in ``eval()`` mode (no dropout, batch-norm running
statistics) even when the distiller is put in ``train()`` mode, without
gradients, and its forward pass under ``torch.no_grad()``.

:func:`fit_classifier` trains a classifier on in-memory tensors, with or
without a teacher, and :func:`accuracy` evaluates one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmlearn._checks import (
    check_positive,
    check_positive_int,
    check_probability,
    check_same_size,
    check_tensor,
)
from mmlearn.functional.distillation import distillation_loss
from mmlearn.optim import param_groups
from mmlearn.utils import seed_everything

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def freeze(teacher: nn.Module) -> nn.Module:
    """Put ``teacher`` in eval mode and turn off its gradients; returns it."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class KnowledgeDistiller(nn.Module):
    """Student and frozen teacher; ``forward(inputs, labels)`` returns {eq}`eq-kd-hinton`.

    Only the student learns: give ``distiller.student.parameters()`` to the
    optimizer. ``train()`` switches the student only; the teacher stays in
    ``eval()`` mode.
    """

    def __init__(
        self, teacher: nn.Module, student: nn.Module, temperature: float, alpha: float
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_probability("alpha", alpha)
        self.teacher = freeze(teacher)
        self.student = student
        self.temperature = temperature
        self.alpha = alpha

    def train(self, mode: bool = True) -> KnowledgeDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        student_logits = self.student(inputs)
        return distillation_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha
        )


def _batches(num_samples: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches (on the CPU) covering every sample once."""
    order = torch.randperm(num_samples, generator=generator)
    return order.split(batch_size)


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, with PyTorch's fused kernel where it exists (CPU and CUDA): same maths, fewer ops.

    Weight decay goes to the weight matrices only (:func:`mmlearn.optim.param_groups`).
    """
    device = next(model.parameters()).device
    return torch.optim.AdamW(
        param_groups(model, weight_decay), lr=lr, fused=device.type in ("cpu", "cuda")
    )


def fit_classifier(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    augment: Augment | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` with AdamW on ``(inputs, labels)``; return the mean loss of each epoch.

    Without a teacher the loss is the cross-entropy with the labels. With a
    teacher it is {eq}`eq-kd-hinton` through a :class:`KnowledgeDistiller`.
    ``augment(batch, generator)`` transforms each batch before both networks see
    it, so a teacher labels exactly what the student is shown; without it the
    teacher's logits on ``inputs`` are computed once and reused. The batch order
    and the augmentations are drawn from a generator seeded with ``seed``. The
    model is left in eval mode.
    """
    check_tensor("inputs", inputs, floating=True)
    check_tensor("labels", labels, ndim=1)
    check_same_size("inputs", inputs.shape[0], "labels", labels.shape[0], "numbers of samples")
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive("lr", lr)
    distiller = None if teacher is None else KnowledgeDistiller(teacher, model, temperature, alpha)
    cached_teacher_logits = None
    if distiller is not None and augment is None:
        # The frozen teacher sees the same inputs every epoch: ask it once.
        with torch.no_grad():
            cached_teacher_logits = distiller.teacher(inputs)
    optimizer = _adamw(model, lr, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in tqdm(range(epochs), disable=not progress, desc="epochs"):
        total = torch.zeros((), dtype=torch.float64, device=inputs.device)  # no sync per step
        for index in _batches(inputs.shape[0], batch_size, generator):
            index = index.to(inputs.device)
            batch, target = inputs[index], labels[index]
            if augment is not None:
                batch = augment(batch, generator)
            if distiller is None:
                loss = F.cross_entropy(model(batch), target)
            elif cached_teacher_logits is None:
                loss = distiller(batch, target)
            else:
                loss = distillation_loss(
                    model(batch), cached_teacher_logits[index], target, temperature, alpha
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        history.append(total.item() / inputs.shape[0])
    model.eval()
    return history


class DigitsCNN(nn.Module):
    """A small convolutional teacher for the 8x8 digits: two 3x3 convolutions, then an MLP.

    Takes images ``(N, 1, 8, 8)`` or flattened ``(N, 64)`` and returns ``(N, 10)`` logits.
    ``features`` gives the 128-d penultimate representation (a FitNets-style hint).
    """

    def __init__(
        self, channels: int = 16, hidden: int = 128, dropout: float = 0.3, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 16, hidden),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images.reshape(-1, 1, 8, 8))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def digits_mlp(hidden: int, num_classes: int = 10) -> nn.Sequential:
    """A one-hidden-layer student for flattened 8x8 digits: ``64 -> hidden -> num_classes``."""
    check_positive_int("hidden", hidden)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def digits_student(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    *,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 1e-2,
) -> nn.Sequential:
    """Section 3.3.1's student: a :func:`digits_mlp` trained full-batch, alone or from a teacher.

    Seeds everything with ``seed``, builds the student on ``inputs``' device
    and trains it with :func:`fit_classifier` for ``epochs`` full-batch AdamW
    steps: on the labels alone without a ``teacher``, on {eq}`eq-kd-hinton`
    with one. The student is returned in eval mode.
    """
    check_tensor("inputs", inputs, floating=True)
    seed_everything(seed)
    student = digits_mlp(hidden).to(inputs.device)
    fit_classifier(
        student,
        inputs,
        labels,
        epochs=epochs,
        batch_size=len(inputs),
        lr=lr,
        seed=seed,
        teacher=teacher,
        temperature=temperature,
        alpha=alpha,
    )
    return student


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 1
) -> torch.Tensor:
    """Shift each 8x8 digit by up to ``max_shift`` pixels in x and y (zero fill).

    Accepts ``(N, 64)`` or ``(N, 1, 8, 8)`` and returns the same shape. The
    shifts are drawn on the CPU from ``generator`` (so runs repeat exactly).
    """
    check_tensor("images", images, floating=True)
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
    grid = images.reshape(-1, 8, 8)
    padded = F.pad(grid, (max_shift, max_shift, max_shift, max_shift))
    count = grid.shape[0]
    dx = torch.randint(0, 2 * max_shift + 1, (count,), generator=generator).to(images.device)
    dy = torch.randint(0, 2 * max_shift + 1, (count,), generator=generator).to(images.device)
    offsets = torch.arange(8, device=images.device)
    rows = (dy[:, None] + offsets)[:, :, None]  # (N, 8, 1)
    cols = (dx[:, None] + offsets)[:, None, :]  # (N, 1, 8)
    shifted = padded[torch.arange(count, device=images.device)[:, None, None], rows, cols]
    return shifted.reshape(images.shape)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its previous mode is restored)."""
    check_tensor("inputs", inputs, floating=True)
    check_same_size("inputs", inputs.shape[0], "labels", labels.shape[0], "numbers of samples")
    was_training = model.training
    model.eval()
    predictions = model(inputs).argmax(dim=-1)
    model.train(was_training)
    return (predictions == labels).float().mean().item()
