"""Contrastive losses of chapter 4.2 (docs/DESIGN.md section 3.1).

* :func:`info_nce`: the book's InfoNCE loss per anchor, {eq}`eq-infonce`;
* :func:`contrastive_objective`: its batch mean, the objective J_CL, {eq}`eq-cl-objective`;
* :func:`clip_loss`: CLIP's symmetric image-text loss, {eq}`eq-clip-loss`;
* :func:`nt_xent`: SimCLR's NT-Xent loss over 2N augmented views, {eq}`eq-nt-xent`;
* :func:`siglip_loss`: SigLIP's pairwise sigmoid loss, {eq}`eq-siglip-loss`.

The first four are a softmax cross-entropy over similarity scores, written with
``logsumexp`` / ``F.cross_entropy``; the sigmoid loss uses ``F.logsigmoid``.
Either way scores of size 1e4 stay finite. The scores are formed in the
input's dtype (a bfloat16 matrix product runs on the fast units); the softmax,
the cross-entropy and the log-sigmoid run in float32 (or float64 for float64
inputs) and the loss is returned in the input's dtype.
Features are rows: ``(N, D)`` means N samples of width D.

No function reads a tensor's value back to the host (no GPU sync, no graph
break under ``torch.compile``) unless :func:`mmlearn.set_debug` is on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmlearn._checks import check_positive, check_same_size, check_tensor, debug_enabled

Scalar = float | torch.Tensor


def _check_features(name: str, features: torch.Tensor) -> torch.Tensor:
    """A float ``(N, D)`` tensor with at least one row."""
    check_tensor(name, features, ndim=2, floating=True)
    if features.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(features.shape)}")
    return features


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Two ``(N, D)`` feature tensors with the same N, D and dtype."""
    _check_features(name_a, a)
    _check_features(name_b, b)
    check_same_size(name_a, a.shape[0], name_b, b.shape[0], "batch sizes")
    check_same_size(name_a, a.shape[1], name_b, b.shape[1], "feature widths D")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} ({a.dtype}) and {name_b} ({b.dtype}) must have the same dtype")


def _check_scalar(name: str, value: Scalar) -> None:
    """A Python number or a one-element float tensor (it may carry a gradient)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number or a scalar tensor, got {type(value).__name__}")


def _check_logit_scale(logit_scale: Scalar) -> None:
    """An exponentiated logit scale: a non-negative finite scalar (a tensor's value: debug only)."""
    _check_scalar("logit_scale", logit_scale)
    if isinstance(logit_scale, torch.Tensor):
        if not debug_enabled():
            return
        scale = float(logit_scale.detach().reshape(-1)[0])
    else:
        scale = logit_scale
    if not 0.0 <= scale < float("inf"):
        raise ValueError(f"logit_scale must be a non-negative finite number, got {logit_scale!r}")


def _check_negatives(negatives: torch.Tensor, anchor: torch.Tensor) -> None:
    """Per-anchor negatives ``(N, K, D)`` or one shared set (a queue) ``(K, D)``."""
    check_tensor("negatives", negatives, ndim=(2, 3), floating=True)
    if negatives.dim() == 3:
        check_same_size("anchor", anchor.shape[0], "negatives", negatives.shape[0], "batch sizes")
    check_same_size("anchor", anchor.shape[1], "negatives", negatives.shape[-1], "feature widths D")
    if negatives.dtype != anchor.dtype:
        raise TypeError(
            f"negatives ({negatives.dtype}) must have the dtype of anchor ({anchor.dtype})"
        )


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in at least float32, where softmax and cross-entropy are computed."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Scalar = 1.0,
) -> torch.Tensor:
    """InfoNCE loss of every anchor, {eq}`eq-infonce`.

    For anchor ``x_n`` with score ``s(x, x') = f(x)^T f(x') / temperature``::

        loss_n = -log( exp(s(x_n, x_n+)) / (exp(s(x_n, x_n+)) + sum_k exp(s(x_n, x_nk-))) )

    The scores are plain dot products of the given features: nothing is
    normalised here (normalise the features first for cosine similarity).

    Args:
        anchor: ``(N, D)`` features ``f(x)`` of the anchors.
        positive: ``(N, D)`` features ``f(x+)``; row n is the positive of anchor n.
        negatives: ``(N, K, D)``: K negatives per anchor; or ``(K, D)``: one set
            of K negatives shared by every anchor (a MoCo-style queue); or
            ``None``: in-batch negatives, the other rows' positives
            (then the loss is ``cross_entropy(anchor @ positive.T / temperature, arange(N))``).
        temperature: ``tau > 0`` dividing every score (float or scalar tensor).

    Returns:
        ``(N,)``: one loss per anchor, each ``>= 0``.
    """
    _check_pair("anchor", anchor, "positive", positive)
    _check_scalar("temperature", temperature)
    check_positive("temperature", temperature)
    if negatives is None:
        logits = _wide(anchor @ positive.T) / temperature
        labels = torch.arange(anchor.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels, reduction="none").to(anchor.dtype)
    _check_negatives(negatives, anchor)
    positive_score = (anchor * positive).sum(dim=-1, keepdim=True)
    if negatives.dim() == 3:
        negative_scores = torch.einsum("nd,nkd->nk", anchor, negatives)
    else:
        negative_scores = anchor @ negatives.T
    logits = _wide(torch.cat([positive_score, negative_scores], dim=1)) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).to(anchor.dtype)


def contrastive_objective(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: Scalar = 1.0,
) -> torch.Tensor:
    """The contrastive objective J_CL, {eq}`eq-cl-objective`: the batch mean of :func:`info_nce`.

    The expectation over the data distribution is estimated by the mean over
    the N anchors of the batch. Arguments as in :func:`info_nce`; returns a scalar.
    """
    return info_nce(anchor, positive, negatives, temperature).mean()


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: Scalar
) -> torch.Tensor:
    """CLIP's symmetric contrastive loss, {eq}`eq-clip-loss`.

    ``logits = logit_scale * image_features @ text_features.T``; image n belongs
    with text n. The loss is the mean of the image->text cross-entropy (rows
    of ``logits``) and the text->image cross-entropy (columns), as in
    open_clip's ``ClipLoss`` on one process.

    Args:
        image_features: ``(N, D)``, already L2-normalised.
        text_features: ``(N, D)``, already L2-normalised.
        logit_scale: the scale ``1 / tau``, already exponentiated (CLIP stores
            ``ln(1 / tau)`` and passes ``exp`` of it); ``>= 0`` and finite.
            At scale 0 every pair looks alike and the loss is ``log N``.

    Returns:
        A scalar tensor.
    """
    _check_pair("image_features", image_features, "text_features", text_features)
    _check_logit_scale(logit_scale)
    logits_per_image = logit_scale * _wide(image_features @ text_features.T)
    labels = torch.arange(image_features.shape[0], device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, labels)
    text_to_image = F.cross_entropy(logits_per_image.T, labels)
    return ((image_to_text + text_to_image) / 2).to(image_features.dtype)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: Scalar) -> torch.Tensor:
    """SimCLR's NT-Xent loss, {eq}`eq-nt-xent`, as in the paper (Chen et al., 2020).

    The 2N views ``z = [z1; z2]`` are L2-normalised here (the "normalised" of
    the name: the score is cosine similarity over ``temperature``). View i's
    positive is its partner view; its negatives are the other ``2N - 2`` views
    (never itself). The result is the mean over all 2N views::

        L = 1/(2N) * sum_i -log( exp(sim(z_i, z_j(i)) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )

    Google's TensorFlow SimCLR code sums the two directions instead of
    averaging them, so its loss is exactly twice this one.

    Args:
        z1: ``(N, D)`` projections of the first augmented view of each sample.
        z2: ``(N, D)`` projections of the second view; row n pairs with ``z1[n]``.
        temperature: ``t > 0``.

    Returns:
        A scalar tensor. Identical embeddings give ``log(2N - 1)``.
    """
    _check_pair("z1", z1, "z2", z2)
    _check_scalar("temperature", temperature)
    check_positive("temperature", temperature)
    n = z1.shape[0]
    z = F.normalize(_wide(torch.cat([z1, z2], dim=0)), dim=1)
    logits = z @ z.T / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    partner = torch.arange(2 * n, device=logits.device).roll(n)
    return F.cross_entropy(logits, partner).to(z1.dtype)


def _check_logit_bias(logit_bias: Scalar) -> None:
    """A finite scalar bias (any sign; SigLIP starts it at -10); a tensor's value: debug only."""
    _check_scalar("logit_bias", logit_bias)
    if isinstance(logit_bias, torch.Tensor):
        if not debug_enabled():
            return
        bias = float(logit_bias.detach().reshape(-1)[0])
    else:
        bias = logit_bias
    if not math.isfinite(bias):
        raise ValueError(f"logit_bias must be a finite number, got {logit_bias!r}")


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: Scalar,
    logit_bias: Scalar,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss, {eq}`eq-siglip-loss` (Zhai et al., 2023).

    Every one of the ``N x N`` image-text pairs is an independent binary
    classification: ``z_ij = +1`` for a matching pair (``i == j``), ``-1``
    otherwise, with logit ``t * x_i . y_j + b``::

        L = -1/N * sum_i sum_j log sigmoid( z_ij * (t * x_i . y_j + b) )

    The sum runs over all N^2 pairs but is divided by the batch size N, as in
    the paper's Algorithm 1 and big_vision's trainer. No softmax couples the
    pairs, so no row or column normalisation over the batch is needed.

    Args:
        image_features: ``(N, D)``, already L2-normalised.
        text_features: ``(N, D)``, already L2-normalised.
        logit_scale: ``t``, already exponentiated (SigLIP stores ``t' = ln t``
            and starts at ``t = 10``); ``>= 0`` and finite.
        logit_bias: ``b``, a finite number (SigLIP starts at ``b = -10``, so
            that the many negative pairs do not dominate the first steps).

    Returns:
        A scalar tensor, ``>= 0``. At ``t = b = 0`` every pair has probability
        1/2 and the loss is ``N log 2``.
    """
    _check_pair("image_features", image_features, "text_features", text_features)
    _check_logit_scale(logit_scale)
    _check_logit_bias(logit_bias)
    logits = logit_scale * _wide(image_features @ text_features.T) + logit_bias
    n = image_features.shape[0]
    signs = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    return (-F.logsigmoid(signs * logits).sum() / n).to(image_features.dtype)
