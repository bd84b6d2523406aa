"""Two formulas for a pretrained image classifier: ConSE zero-shot embeddings and Grad-CAM.

* :func:`conse_embedding` (Norouzi et al., 2014): an image's embedding in a text
  space is the probability-weighted average of the text embeddings of its
  classifier's top-``k`` classes (book equation ``eq-conse``);
* :func:`grad_cam` (Selvaraju et al., 2017): a class-discriminative map, the ReLU
  of the convolutional feature maps weighted by their spatially averaged
  gradients (book equation ``eq-grad-cam``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmlearn._checks import check_positive_int, check_tensor

__all__ = ["conse_embedding", "grad_cam"]


def conse_embedding(
    probabilities: torch.Tensor, class_embeddings: torch.Tensor, top_k: int = 10
) -> torch.Tensor:
    """ConSE: embed images in a text space through a classifier's probabilities.

    Implements {eq}`eq-conse`: for each image, take the ``top_k`` most probable
    classes ``y_1..y_k``, and average their text embeddings ``s(y_t)`` weighted by
    ``p(y_t | x)``; the normaliser ``Z = sum_t p(y_t | x)`` does not change the
    direction, and we return the L2-normalised result, so that a dot product with a
    normalised prompt embedding is the cosine similarity ConSE ranks by.

    Args:
        probabilities: ``(B, C)`` class probabilities (rows of a softmax).
        class_embeddings: ``(C, D)`` text embeddings of the ``C`` class names.
        top_k: how many classes to combine, ``1 <= top_k <= C``. With ``top_k=1``
            the result is the (normalised) embedding of the top class.

    Returns:
        ``(B, D)`` unit vectors. Differentiable with respect to ``probabilities``
        (the choice of the top ``k`` is not).
    """
    check_tensor("probabilities", probabilities, ndim=2, floating=True)
    check_tensor("class_embeddings", class_embeddings, ndim=2, floating=True)
    num_classes = probabilities.shape[1]
    if class_embeddings.shape[0] != num_classes:
        raise ValueError(
            f"class_embeddings must have one row per class ({num_classes}), "
            f"got shape {tuple(class_embeddings.shape)}"
        )
    check_positive_int("top_k", top_k)
    if top_k > num_classes:
        raise ValueError(
            f"top_k must be at most the number of classes ({num_classes}), got {top_k}"
        )
    weights, indices = probabilities.topk(top_k, dim=1)  # (B, k)
    combined = torch.einsum("bk,bkd->bd", weights, class_embeddings[indices])
    return F.normalize(combined, dim=-1)


def grad_cam(
    activations: torch.Tensor, gradients: torch.Tensor, size: Sequence[int] | None = None
) -> torch.Tensor:
    """Grad-CAM from feature maps and the gradient of a score with respect to them.

    Implements {eq}`eq-grad-cam`: ``alpha_k = mean_ij dS/dA^k_ij`` for each channel
    ``k``, then ``ReLU(sum_k alpha_k A^k)``.

    Args:
        activations: ``(B, K, h, w)`` feature maps ``A`` of a convolutional layer.
        gradients: ``(B, K, h, w)``, ``dS/dA`` for the score ``S`` to explain.
        size: ``(H, W)`` to upsample the ``(h, w)`` map to (bilinear), e.g. the
            photo's size; ``None`` keeps ``(h, w)``.

    Returns:
        ``(B, h, w)`` or ``(B, H, W)``, non-negative, not normalised.
    """
    check_tensor("activations", activations, ndim=4, floating=True)
    check_tensor("gradients", gradients, ndim=4, floating=True)
    if gradients.shape != activations.shape:
        raise ValueError(
            f"gradients must have the shape of activations "
            f"{tuple(activations.shape)}, got {tuple(gradients.shape)}"
        )
    alpha = gradients.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    cam = torch.relu((alpha * activations).sum(dim=1))  # (B, h, w)
    if size is None:
        return cam
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    upsampled = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]
    return upsampled.clamp(min=0.0)
