"""A LLaVA-style vision-language model: vision encoder, projector, decoder-only LM (section 3.4).

``VisionLanguageModel(vision_encoder, projector, language_model)``:

1. the vision encoder turns an image into patch features ``(B, P, d_vision)``
   (a ViT's patch tokens; its CLS token is dropped, as LLaVA does);
2. the projector maps them to ``T`` *image tokens* in the language model's
   embedding space, ``(B, T, d_model)``: ``"mlp"`` (LLaVA-1.5, ``T = P``) or
   ``"qformer"`` (BLIP-2 style, ``T`` = a fixed number of learned queries);
3. the prompt's single ``<image>`` placeholder is replaced by those ``T`` tokens, so
   the sequence grows by ``T - 1``, and the decoder-only language model
   (:class:`mmlearn.nn.TransformerDecoder`) reads text and image tokens alike.

:meth:`VisionLanguageModel.generate` answers prompts with the key-value cache of
:mod:`mmlearn.generation`, greedily (``temperature=0``) or by sampling, and stops
at the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn import generation  # module import: generation itself imports mmlearn.nn
from mmlearn._checks import check_positive_int, check_tensor
from mmlearn.functional.transformer import attention_weights
from mmlearn.nn.attention import MultiHeadAttention
from mmlearn.nn.decoder import TransformerDecoder
from mmlearn.nn.feedforward import FeedForward

__all__ = [
    "PROJECTORS",
    "MLPProjector",
    "QFormerProjector",
    "VLMOutput",
    "VisionLanguageModel",
    "chat_loss",
    "make_projector",
]

PROJECTORS = ("mlp", "qformer")
IGNORE_INDEX = -100


class MLPProjector(nn.Module):
    """LLaVA-1.5's projector: ``Linear -> GELU -> Linear`` on every patch (``T = P``)."""

    def __init__(self, vision_dim: int, lm_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = lm_dim if hidden_dim is None else hidden_dim
        for name, value in (
            ("vision_dim", vision_dim),
            ("lm_dim", lm_dim),
            ("hidden_dim", hidden_dim),
        ):
            check_positive_int(name, value)
        self.net = nn.Sequential(
            nn.Linear(vision_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, lm_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, P, vision_dim) -> (B, P, lm_dim)``."""
        check_tensor("features", features, ndim=3, floating=True)
        return self.net(features)


class _QFormerLayer(nn.Module):
    """Queries: self-attention, cross-attention to the patch features, feed-forward (pre-LN)."""

    def __init__(self, d_model: int, vision_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, kdim=vision_dim, vdim=vision_dim)
        self.ffn = FeedForward(d_model, 2 * d_model)

    def forward(
        self, queries: torch.Tensor, features: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm1(queries)
        queries = queries + self.self_attn(h, h, h)[0]
        attended, weights = self.cross_attn(
            self.norm2(queries), features, features, need_weights=need_weights
        )
        queries = queries + attended
        return queries + self.ffn(self.norm3(queries)), weights


class QFormerProjector(nn.Module):
    """BLIP-2-style projector: ``num_queries`` learned queries read the patches by cross-attention.

    Whatever the number of patches ``P``, the output has ``num_queries`` tokens: a
    fixed, usually smaller, image-token budget for the language model. (BLIP-2's
    Q-Former is a BERT with these queries; this is its smallest form.)
    """

    def __init__(
        self,
        vision_dim: int,
        lm_dim: int,
        num_queries: int = 4,
        d_model: int | None = None,
        num_heads: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        d_model = lm_dim if d_model is None else d_model
        for name, value in (
            ("vision_dim", vision_dim),
            ("lm_dim", lm_dim),
            ("num_queries", num_queries),
            ("d_model", d_model),
            ("num_layers", num_layers),
        ):
            check_positive_int(name, value)
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(1, num_queries, d_model) * 0.02)
        self.layers = nn.ModuleList(
            _QFormerLayer(d_model, vision_dim, num_heads) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, lm_dim)
        self.last_weights: torch.Tensor | None = None

    def forward(self, features: torch.Tensor, need_weights: bool = False) -> torch.Tensor:
        """``(B, P, vision_dim) -> (B, num_queries, lm_dim)``.

        With ``need_weights`` the last layer's cross-attention ``(B, h, num_queries, P)``
        is kept in ``self.last_weights``.
        """
        check_tensor("features", features, ndim=3, floating=True)
        queries = self.queries.expand(features.shape[0], -1, -1)
        for layer in self.layers:
            queries, weights = layer(queries, features, need_weights)
        self.last_weights = weights
        return self.proj(self.norm(queries))


def make_projector(name: str, vision_dim: int, lm_dim: int, **options: int) -> nn.Module:
    """``"mlp"`` -> :class:`MLPProjector`, ``"qformer"`` -> :class:`QFormerProjector`."""
    if name == "mlp":
        return MLPProjector(vision_dim, lm_dim, **options)
    if name == "qformer":
        return QFormerProjector(vision_dim, lm_dim, **options)
    raise ValueError(f"projector name must be one of {PROJECTORS}, got {name!r}")


def chat_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged over the positions whose label is not ignored.

    ``logits (B, L, V)`` at position ``t`` predict ``labels[:, t + 1]`` (the shift is
    done here); labels equal to -100 (prompt, image tokens, padding) do not count.
    """
    check_tensor("logits", logits, ndim=3, floating=True)
    check_tensor("labels", labels, ndim=2)
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}"
        )
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


@dataclass
class VLMOutput:
    """Logits ``(B, L', V)`` of the expanded sequence, its labels and where the image sits.

    ``labels`` (``(B, L')`` with -100 at the image tokens) is None when no labels were
    given; ``image_start (B,)`` is the position of the first image token, and the
    image occupies ``image_start .. image_start + num_image_tokens - 1``.
    """

    logits: torch.Tensor
    labels: torch.Tensor | None
    image_start: torch.Tensor | None
    num_image_tokens: int


class VisionLanguageModel(nn.Module):
    """Vision encoder + projector + decoder-only language model (LLaVA).

    Args:
        vision_encoder: maps images ``(B, C, H, W)`` to patch features ``(B, P, d)``, or
            to mmlearn's ``(tokens, pooled, attentions)`` (then ``tokens[:, 1:]``, CLS dropped).
        projector: maps ``(B, P, d)`` to image tokens ``(B, T, d_model)``.
        language_model: a :class:`~mmlearn.nn.TransformerDecoder` without cross-attention.
        image_token_id, eot_id, pad_id: the ids of ``<image>``, ``<eot>`` and ``<pad>``.
    """

    def __init__(
        self,
        vision_encoder: nn.Module,
        projector: nn.Module,
        language_model: TransformerDecoder,
        image_token_id: int,
        eot_id: int,
        pad_id: int,
    ) -> None:
        super().__init__()
        if not isinstance(language_model, TransformerDecoder) or language_model.cross_attention:
            raise TypeError("language_model must be a TransformerDecoder without cross-attention")
        self.vision_encoder, self.projector = vision_encoder, projector
        self.language_model = language_model
        self.image_token_id, self.eot_id, self.pad_id = image_token_id, eot_id, pad_id

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(B, P, d_vision)`` of the vision encoder."""
        output = self.vision_encoder(images)
        return output[0][:, 1:] if isinstance(output, tuple) else output

    def _image_tokens(
        self, images: torch.Tensor | None, image_features: torch.Tensor | None
    ) -> torch.Tensor | None:
        if images is not None and image_features is not None:
            raise ValueError("give images or image_features, not both")
        if images is not None:
            image_features = self.encode_images(images)
        return None if image_features is None else self.projector(image_features)

    def _placeholders(self, ids: torch.Tensor, has_image: bool) -> torch.Tensor | None:
        """The ``<image>`` position of each row; checks one per row (zero without images)."""
        counts = (ids == self.image_token_id).sum(dim=1)
        wanted = 1 if has_image else 0
        if (counts != wanted).any():
            row = int((counts != wanted).nonzero()[0])
            raise ValueError(
                f"ids: row {row} has {int(counts[row])} <image> placeholders but "
                f"{wanted} image was given for it"
            )
        return (ids == self.image_token_id).long().argmax(dim=1) if has_image else None

    def build_inputs(
        self,
        ids: torch.Tensor,
        image_tokens: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Splice the image tokens into the prompt's embeddings at ``<image>``.

        Returns ``(inputs_embeds (B, L + T - 1, d), valid, labels or None, image_start)``.
        """
        check_tensor("ids", ids, ndim=2)
        if image_tokens is not None and image_tokens.shape[0] != ids.shape[0]:
            raise ValueError(
                f"images: {image_tokens.shape[0]} images for {ids.shape[0]} "
                f"prompts in ids; give one image per prompt"
            )
        start = self._placeholders(ids, image_tokens is not None)
        embeds = self.language_model.embed_tokens(ids)
        valid = ids != self.pad_id
        if image_tokens is None:
            return embeds, valid, labels, None
        count = image_tokens.shape[1]
        j = torch.arange(ids.shape[1] + count - 1, device=ids.device)[None]  # new positions
        is_image = (j >= start[:, None]) & (j < start[:, None] + count)
        source = torch.where(j < start[:, None], j, j - count + 1).clamp(0, ids.shape[1] - 1)
        picked = (j - start[:, None]).clamp(0, count - 1)
        embeds = torch.where(
            is_image[..., None],
            image_tokens.gather(1, picked[..., None].expand(-1, -1, image_tokens.shape[-1])),
            embeds.gather(1, source[..., None].expand(-1, -1, embeds.shape[-1])),
        )
        valid = valid.gather(1, source) | is_image
        if labels is not None:
            labels = labels.gather(1, source).masked_fill(is_image, IGNORE_INDEX)
        return embeds, valid, labels, start

    def forward(
        self,
        ids: torch.Tensor,
        images: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> VLMOutput:
        """Logits of the prompt with its image tokens spliced in (see :class:`VLMOutput`).

        ``image_features`` (the vision encoder's output, computed once for a frozen
        encoder) may replace ``images``; with neither, the prompts must hold no
        ``<image>`` (the language model alone).
        """
        image_tokens = self._image_tokens(images, image_features)
        embeds, valid, labels, start = self.build_inputs(ids, image_tokens, labels)
        logits = self.language_model(inputs_embeds=embeds, valid=valid).logits
        count = 0 if image_tokens is None else image_tokens.shape[1]
        return VLMOutput(logits, labels, start, count)

    @torch.no_grad()
    def attention_maps(
        self,
        ids: torch.Tensor,
        images: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Every layer's causal self-attention ``(B, h, L', L')`` over the spliced sequence.

        Returns ``(maps, image_start)``: row ``t`` of a map is what position ``t`` (which
        predicts token ``t + 1``) attends to, image tokens included.
        """
        embeds, valid, _, start = self.build_inputs(ids, self._image_tokens(images, image_features))
        lm = self.language_model
        x = lm._inputs(None, embeds, 0)
        mask = lm._self_mask(valid, x.shape[1])
        maps = []
        for layer in lm.layers:
            q, k = layer.queries_keys(layer.norm1(x), 0)
            maps.append(attention_weights(q, k, mask))
            x, _, _ = layer(x, mask)
        return maps, start

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor | None,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        *,
        image_features: torch.Tensor | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Answer each prompt (token ids ending with ``<assistant>``) about its image.

        Greedy when ``temperature == 0``, else sampling from ``softmax(logits / temperature)``
        restricted to the ``top_k`` best tokens. Each answer stops at ``<eot>`` (not
        included) or after ``max_new_tokens`` tokens. Prompts of equal length are
        decoded together, so no padding changes any position.

        Returns:
            The generated token ids of each prompt, in the order of ``prompts``.
        """
        check_positive_int("max_new_tokens", max_new_tokens)
        if not isinstance(temperature, int | float) or temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if top_k is not None:
            check_positive_int("top_k", top_k)
        image_tokens = self._image_tokens(images, image_features)
        device = self.language_model.token_embed.weight.device
        answers: list[list[int]] = [[] for _ in prompts]
        for length in sorted({len(p) for p in prompts}):
            rows = [i for i, p in enumerate(prompts) if len(p) == length]
            ids = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long, device=device)
            tokens = None if image_tokens is None else image_tokens[rows]
            stepper = _VLMStepper(self, ids, tokens, use_cache)
            options = {"eos_id": self.eot_id, "pad_id": self.pad_id}
            if temperature == 0:
                out = generation.greedy(stepper, ids, max_new_tokens, **options)
            else:
                out = generation.sample(
                    stepper,
                    ids,
                    max_new_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    generator=generator,
                    **options,
                )
            for row, sequence in zip(rows, out.sequences[:, length:].tolist(), strict=True):
                answers[row] = _until(sequence, self.eot_id)
        return answers


def _until(sequence: list[int], eot_id: int) -> list[int]:
    return sequence[: sequence.index(eot_id)] if eot_id in sequence else sequence


class _VLMStepper:
    """The stepper of :mod:`mmlearn.generation` for a VLM: the first step feeds the prompt
    with its image tokens spliced in, later steps one token (through the KV cache)."""

    def __init__(
        self,
        model: VisionLanguageModel,
        ids: torch.Tensor,
        image_tokens: torch.Tensor | None,
        use_cache: bool,
    ) -> None:
        self.model, self.lm = model, model.language_model
        self.embeds, self.valid, _, _ = model.build_inputs(ids, image_tokens)
        self.cache = self.lm.new_cache() if use_cache else None
        self.started = False

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        if self.started:
            new = self.lm.embed_tokens(ids)
            valid = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        else:
            new, valid, self.started = self.embeds, self.valid, True
        if self.cache is None:  # recompute the whole sequence at every step
            if new is not self.embeds:
                self.embeds = torch.cat([self.embeds, new], dim=1)
                self.valid = torch.cat([self.valid, valid], dim=1)
            return self.lm(inputs_embeds=self.embeds, valid=self.valid).logits[:, -1]
        return self.lm(inputs_embeds=new, valid=valid, cache=self.cache).logits[:, -1]

    def reorder(self, indices: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(indices)
        self.embeds, self.valid = self.embeds[indices], self.valid[indices]
