"""Retrieval and zero-shot metrics for image-text models.

* :func:`recall_at_k`: Recall@K of image->text and text->image retrieval from a
  similarity matrix, where an image may have several captions (COCO and
  Flickr30K have five);
* :func:`zero_shot_classifier`, :func:`zero_shot_predict`,
  :func:`zero_shot_accuracy`: classification by comparing an image with a text
  embedding of each class, built from prompts ("a handwritten digit seven", ...).

Neither depends on the logit scale: multiplying every similarity by the same
positive number changes no ranking and no argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mmlearn._checks import check_positive_int, check_same_size, check_tensor

__all__ = ["recall_at_k", "zero_shot_accuracy", "zero_shot_classifier", "zero_shot_predict"]


def _check_index_vector(name: str, value: torch.Tensor, length: int, upper: int) -> None:
    """An integer ``(length,)`` tensor with values in ``[0, upper)``."""
    check_tensor(name, value, ndim=1)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices, got dtype {value.dtype}")
    if value.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries, got {value.shape[0]}")
    if value.numel() and (value.min() < 0 or value.max() >= upper):
        raise ValueError(
            f"{name} must lie in [0, {upper}), got values in "
            f"[{int(value.min())}, {int(value.max())}]"
        )


def _ranks_of_best_match(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """For each row: how many wrong candidates score at least as high as the best correct one.

    ``scores`` and ``correct`` are ``(Q, C)``; rank 0 means a correct candidate
    comes first. Ties count against the query (a constant matrix is no hit
    at K = 1), so a degenerate model cannot look good.
    """
    best_correct = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
    return ((scores >= best_correct) & ~correct).sum(dim=1)


def recall_at_k(
    similarity: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[int, float]]:
    """Recall@K of retrieval in both directions.

    * image->text: image i is a hit at K if ANY of its captions is among the
      K texts most similar to it;
    * text->image: text j is a hit at K if its image is among the K images
      most similar to it.

    Ties count against the query: a correct item that shares its score with
    wrong ones is ranked after them (a constant matrix scores no hit at K=1).

    Args:
        similarity: ``(N_img, N_txt)`` scores, e.g. ``image_features @ text_features.T``.
        text_to_image: ``(N_txt,)`` index of each text's image; every image
            needs at least one caption.
        ks: the cut-offs K (positive integers).

    Returns:
        ``{"image_to_text": {K: recall}, "text_to_image": {K: recall}}``, recalls in [0, 1]
        (``pandas.DataFrame(result)`` makes a table of it).
    """
    check_tensor("similarity", similarity, ndim=2, floating=True)
    num_images, num_texts = similarity.shape
    if num_images == 0 or num_texts == 0:
        raise ValueError(
            f"similarity must have at least one image (row) and one text "
            f"(column), got shape {tuple(similarity.shape)}"
        )
    _check_index_vector("text_to_image", text_to_image, num_texts, num_images)
    ks = [check_positive_int("ks", k) for k in ks]
    if not ks:
        raise ValueError("ks must name at least one cut-off K")
    correct = F.one_hot(text_to_image.to(similarity.device), num_images).T.bool()
    if not bool(correct.any(dim=1).all()):
        raise ValueError("text_to_image must give every image at least one caption")
    image_ranks = _ranks_of_best_match(similarity, correct)
    text_ranks = _ranks_of_best_match(similarity.T, correct.T)
    return {
        "image_to_text": {k: int((image_ranks < k).sum()) / num_images for k in ks},
        "text_to_image": {k: int((text_ranks < k).sum()) / num_texts for k in ks},
    }


@torch.no_grad()
def zero_shot_classifier(
    text_encoder_fn: Callable[[list[str]], torch.Tensor], class_prompts: Sequence[Sequence[str]]
) -> torch.Tensor:
    """One embedding per class: the normalised mean of its prompts' normalised embeddings.

    Args:
        text_encoder_fn: maps a list of P strings to ``(P, D)`` features
            (for example ``lambda texts: model.encode_text(*tokenizer.encode(texts))``).
        class_prompts: ``class_prompts[c]`` is the list of prompts of class c
            (see :func:`mmlearn.data.digits.prompts_en`).

    Returns:
        ``(C, D)`` L2-normalised class embeddings (computed without gradients).
    """
    if not callable(text_encoder_fn):
        raise TypeError(f"text_encoder_fn must be callable, got {type(text_encoder_fn).__name__}")
    if isinstance(class_prompts, str) or len(class_prompts) == 0:
        raise ValueError(
            "class_prompts must be a non-empty list with one list of prompts per class"
        )
    for index, prompts in enumerate(class_prompts):
        if (
            isinstance(prompts, str)
            or len(prompts) == 0
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise ValueError(
                f"class_prompts[{index}] must be a non-empty list of strings, got {prompts!r}"
            )
    texts = [prompt for prompts in class_prompts for prompt in prompts]
    features = text_encoder_fn(texts)
    check_tensor("text_encoder_fn(prompts)", features, ndim=2, floating=True)
    check_same_size(
        "prompts", len(texts), "text_encoder_fn(prompts)", features.shape[0], "row counts"
    )
    features = F.normalize(features, dim=-1)
    class_means = torch.stack(
        [chunk.mean(dim=0) for chunk in features.split([len(p) for p in class_prompts])]
    )
    return F.normalize(class_means, dim=-1)


def zero_shot_predict(image_features: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """``(N,)`` predicted class: the class embedding with the highest cosine similarity."""
    check_tensor("image_features", image_features, ndim=2, floating=True)
    check_tensor("class_embeddings", class_embeddings, ndim=2, floating=True)
    check_same_size(
        "image_features",
        image_features.shape[1],
        "class_embeddings",
        class_embeddings.shape[1],
        "feature widths D",
    )
    if class_embeddings.shape[0] == 0:
        raise ValueError("class_embeddings must have at least one class (row)")
    scores = F.normalize(image_features, dim=-1) @ class_embeddings.to(image_features.dtype).T
    return scores.argmax(dim=1)


def zero_shot_accuracy(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor
) -> float:
    """Fraction of images whose :func:`zero_shot_predict` class equals ``labels``.

    Args:
        image_features: ``(N, D)`` image features (normalised or not: argmax is the same).
        class_embeddings: ``(C, D)`` from :func:`zero_shot_classifier`.
        labels: ``(N,)`` integer classes in ``[0, C)``.
    """
    predictions = zero_shot_predict(image_features, class_embeddings)
    _check_index_vector("labels", labels, image_features.shape[0], class_embeddings.shape[0])
    if labels.numel() == 0:
        raise ValueError("labels must not be empty")
    return int((predictions == labels.to(predictions.device)).sum()) / labels.numel()
