"""Zero-shot classification of photos with free-text prompts, two ways.

* :class:`ConSE` (Norouzi et al., 2014), zero-shot *before* CLIP: a pretrained
  ImageNet classifier (EfficientNet-Lite0) and a pretrained sentence encoder
  (MiniLM) that never saw an image. A photo is embedded as the probability-weighted
  average of the sentence embeddings of its top-``k`` ImageNet class names
  (:func:`mmlearn.functional.conse_embedding`), then compared with the prompts'
  embeddings by cosine similarity. :meth:`ConSE.saliency` explains one
  photo-prompt similarity with Grad-CAM (:func:`mmlearn.functional.grad_cam`).
* :func:`clip_zero_shot`: the same photos and prompts through a ``transformers``
  ``CLIPModel`` (the real one in Colab; a tiny random one in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmlearn._checks import check_positive_int, check_tensor
from mmlearn.functional.vision import conse_embedding, grad_cam
from mmlearn.pretrained import encode_sentences

__all__ = ["ConSE", "check_prompts", "classifier_head", "clip_zero_shot"]


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """A non-empty list of non-empty strings (the error names ``prompts``)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    if len(prompts) == 0:
        raise ValueError("prompts must not be empty: give at least one text to compare with")
    if any(not p.strip() for p in prompts):
        raise ValueError("prompts must not contain empty strings")
    return list(prompts)


def classifier_head(classifier: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """EfficientNet's head on its last convolutional features: average pooling, dropout, linear.

    ``classifier_head(model, model.extract_features(x))`` equals ``model(x)``; splitting
    the forward pass here lets Grad-CAM take gradients with respect to ``features``.
    """
    pooled = classifier._avg_pooling(features).flatten(1)
    return classifier._fc(classifier._dropout(pooled))


class ConSE:
    """A ConSE zero-shot classifier: an ImageNet classifier plus a frozen text encoder.

    Args:
        classifier: an EfficientNet from :func:`mmlearn.pretrained.load_efficientnet_lite0`
            (``extract_features`` plus the pooling / fully connected head).
        text_model, tokenizer: MiniLM from :func:`mmlearn.pretrained.load_minilm`.
        class_names: the classifier's class names in index order
            (:func:`mmlearn.data.imagenet_classes`).
        top_k: how many of the most probable classes to combine.

    The class names are embedded once, here. All computation happens on the text
    model's device; move both models there first.
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        text_model,
        tokenizer,
        class_names: Sequence[str],
        top_k: int = 10,
    ) -> None:
        self.top_k = check_positive_int("top_k", top_k)
        self.class_names = list(class_names)
        if top_k > len(self.class_names):
            raise ValueError(
                f"top_k must be at most the number of classes "
                f"({len(self.class_names)}), got {top_k}"
            )
        self.classifier = classifier.eval()
        self.text_model, self.tokenizer = text_model, tokenizer
        self.class_embeddings = self.encode_text(self.class_names)  # (C, D), unit rows

    @property
    def device(self) -> torch.device:
        return next(self.text_model.parameters()).device

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-length MiniLM embeddings ``(P, D)`` of the prompts."""
        return encode_sentences(self.text_model, self.tokenizer, check_prompts(prompts))

    def features_and_logits(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last convolutional features ``(B, 1280, 7, 7)`` and ImageNet logits ``(B, 1000)``."""
        check_tensor("pixel_values", pixel_values, ndim=4, floating=True)
        if pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be RGB (B, 3, H, W), got shape {tuple(pixel_values.shape)}"
            )
        features = self.classifier.extract_features(pixel_values.to(self.device))
        return features, classifier_head(self.classifier, features)

    @torch.no_grad()
    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities ``(B, 1000)``."""
        return self.features_and_logits(pixel_values)[1].softmax(dim=-1)

    @torch.no_grad()
    def encode_image(self, pixel_values: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
        """ConSE embeddings ``(B, D)`` (unit vectors) of a preprocessed batch."""
        k = self.top_k if top_k is None else top_k
        return conse_embedding(self.probabilities(pixel_values), self.class_embeddings, k)

    def similarity(
        self, pixel_values: torch.Tensor, prompts: Sequence[str], top_k: int | None = None
    ) -> torch.Tensor:
        """Cosine similarities ``(B, P)`` between the photos and the prompts."""
        texts = self.encode_text(prompts)
        return self.encode_image(pixel_values, top_k) @ texts.T

    def saliency(
        self, pixel_values: torch.Tensor, prompts: Sequence[str], size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Grad-CAM maps ``(B, P, H, W)`` of each photo-prompt cosine similarity.

        The score explained is ``cos(conse_embedding(x), text(prompt))``; its gradient
        flows through the top-``k`` probabilities, the linear head and the average
        pooling into the last convolutional features ``(B, 1280, 7, 7)``.
        ``size`` is the output ``(H, W)``; by default the input's.
        """
        texts = self.encode_text(prompts)  # (P, D)
        with torch.no_grad():
            features = self.features_and_logits(pixel_values)[0]
        features = features.detach().requires_grad_(True)
        out_size = tuple(pixel_values.shape[-2:]) if size is None else tuple(size)
        maps = []
        with torch.enable_grad():
            probabilities = classifier_head(self.classifier, features).softmax(dim=-1)
            image = conse_embedding(probabilities, self.class_embeddings, self.top_k)
            scores = image @ texts.T  # (B, P)
            for column in range(scores.shape[1]):
                (gradients,) = torch.autograd.grad(
                    scores[:, column].sum(), features, retain_graph=column + 1 < scores.shape[1]
                )
                maps.append(grad_cam(features.detach(), gradients, out_size))
        return torch.stack(maps, dim=1)


@torch.no_grad()
def clip_zero_shot(
    model,
    image_processor,
    tokenizer,
    photos: Sequence,
    prompts: Sequence[str],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Zero-shot probabilities ``(num_photos, num_prompts)`` from a ``transformers`` CLIP.

    Args:
        model: a ``CLIPModel`` (for example ``openai/clip-vit-base-patch32``).
        image_processor, tokenizer: its ``CLIPImageProcessor`` and tokenizer (a
            ``CLIPProcessor`` carries both as ``.image_processor`` and ``.tokenizer``).
        photos: ``(H, W, 3)`` uint8 arrays.
        prompts: the texts to choose among.

    Returns:
        The softmax over the prompts of ``logit_scale * cos(image, text)``, on the CPU.
    """
    prompts = check_prompts(prompts)
    if len(photos) == 0:
        raise ValueError("photos must not be empty")
    device = next(model.parameters()).device if device is None else torch.device(device)
    pixels = image_processor(images=list(photos), return_tensors="pt")["pixel_values"]
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    logits = model(
        input_ids=text["input_ids"].to(device),
        attention_mask=text["attention_mask"].to(device),
        pixel_values=pixels.to(device),
    ).logits_per_image
    return logits.softmax(dim=-1).cpu()
