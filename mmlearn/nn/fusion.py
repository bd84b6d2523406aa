"""Three ways to join an image and a text in one Transformer (book sections 3.1 and 5.1).

* ``"concat"`` (late fusion, MMF's ``concat_bert``): a ViT and a text encoder
  run separately; their CLS vectors are concatenated and classified. The two
  modalities meet only in the classifier head.
* ``"early"`` (single stream, ViLT, Kim et al. 2021): text tokens and image
  patches form one sequence, told apart by modality (token-type) embeddings;
  every layer lets every token attend to every other.
* ``"cross"`` (Flamingo-style, Alayrac et al. 2022): the text stream attends to
  the image patches through cross-attention blocks interleaved with its own
  self-attention layers; with ``gated=True`` each cross block is scaled by
  ``tanh(alpha)`` with ``alpha = 0`` at initialisation, so a new block starts as
  the identity and the text model is unchanged until the gate opens.

All models take ``(images (B, C, H, W), ids (B, L), valid (B, L))`` and return
``(logits (B, num_classes), attentions)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_probability, check_same_size
from mmlearn.functional.transformer import padding_mask
from mmlearn.nn.attention import MultiHeadAttention
from mmlearn.nn.feedforward import FeedForward
from mmlearn.nn.text import TextTransformer, check_text_inputs
from mmlearn.nn.transformer import TransformerEncoder
from mmlearn.nn.vision import PatchEmbedding, VisionTransformer

__all__ = [
    "FUSIONS",
    "MODALITIES",
    "CrossAttentionBlock",
    "FusionOutput",
    "MultimodalTransformer",
    "UnimodalBaseline",
]

FUSIONS = ("concat", "early", "cross")
MODALITIES = ("image", "text")


class CrossAttentionBlock(nn.Module):
    """A pre-LN cross-attention block: queries from the text, keys and values from the image.

    ``x = x + g_attn * CrossAttn(LN(x), context, context)`` then
    ``x = x + g_ffn * FFN(LN(x))``. Without gates ``g = 1``; with ``gated=True``
    ``g = tanh(alpha)`` with a learned scalar ``alpha`` per sub-layer, initialised at 0
    (Flamingo's gated cross-attention), so the block is the identity at initialisation.

    Args:
        d_model: width of the text stream (the queries and the output).
        num_heads, d_ff, dropout: the attention and the feed-forward network.
        kdim: width of the context (image) tokens, default ``d_model``.
        gated: add the two ``tanh(alpha)`` gates.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        kdim: int | None = None,
        dropout: float = 0.0,
        gated: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.cross_attn = MultiHeadAttention(
            d_model, num_heads, dropout=dropout, kdim=kdim, vdim=kdim
        )
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.attn_gate = nn.Parameter(torch.zeros(())) if gated else None
        self.ffn_gate = nn.Parameter(torch.zeros(())) if gated else None

    @staticmethod
    def _gate(gate: nn.Parameter | None, update: torch.Tensor) -> torch.Tensor:
        return update if gate is None else torch.tanh(gate) * update

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Update the text tokens ``x (B, L, d_model)`` from ``context (B, P, kdim)``.

        Args:
            context_valid: optional ``(B, P)`` bool, True = a real context token.
            need_weights: also return the cross-attention weights ``(B, h, L, P)``.
        """
        mask = None if context_valid is None else padding_mask(context_valid)
        attended, weights = self.cross_attn(
            self.norm1(x), context, context, mask=mask, need_weights=need_weights
        )
        x = x + self._gate(self.attn_gate, self.dropout(attended))
        x = x + self._gate(self.ffn_gate, self.dropout(self.ffn(self.norm2(x))))
        return x, weights


@dataclass
class FusionOutput:
    """What a fusion model computes before its classifier head.

    Attributes:
        text_tokens: ``(B, L, d_model)`` the text positions at the output of the
            text stream (for ``"early"``: the text part of the joint sequence).
        image_tokens: the image positions at the output: the ViT's ``(B, 1 + P, d_vision)``
            for ``"concat"`` and ``"cross"``, the patch part ``(B, P, d_model)`` of the
            joint sequence for ``"early"``.
        pooled: ``(B, head_in)`` the vector the head classifies.
        attentions: None, or a dict of per-layer attention lists: ``"image"`` and
            ``"text"`` (self-attention of each encoder), ``"joint"`` (early fusion,
            ``(B, h, L + P, L + P)``, text first), ``"cross"`` (``(B, h, L, P)``).
    """

    text_tokens: torch.Tensor
    image_tokens: torch.Tensor
    pooled: torch.Tensor
    attentions: dict[str, list[torch.Tensor]] | None


def _classifier_head(in_features: int, d_model: int, num_classes: int) -> nn.Sequential:
    """``Linear -> GELU -> Linear``: the non-linearity lets the head combine its inputs."""
    return nn.Sequential(
        nn.Linear(in_features, d_model), nn.GELU(), nn.Linear(d_model, num_classes)
    )


def _check_batch(images: torch.Tensor, ids: torch.Tensor) -> None:
    check_same_size("images", images.shape[0], "ids", ids.shape[0], "batch sizes")


class MultimodalTransformer(nn.Module):
    """An image-text classifier with ``fusion`` in ``("concat", "early", "cross")``.

    Args:
        vocab_size: number of token ids of the text.
        num_classes: number of outputs of the classifier head.
        fusion: how image and text meet (see the module docstring).
        image_size, patch_size, in_channels: the images, cut into patches.
        d_model, num_heads, num_layers, d_ff, dropout: every encoder's sizes; each
            encoder (and, for ``"cross"``, the stack of cross blocks) has ``num_layers``.
        max_length: the longest token sequence.
        d_vision: width of the image encoder for ``"concat"`` and ``"cross"``
            (default ``d_model``); ``"early"`` needs one width for both.
        gated: tanh gates on the cross blocks (``"cross"`` only).
        pad_id: the padding token id.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        fusion: str = "cross",
        image_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 128,
        max_length: int = 16,
        d_vision: int | None = None,
        gated: bool = False,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        check_positive_int("num_classes", num_classes)
        check_probability("dropout", dropout)
        d_vision = d_model if d_vision is None else check_positive_int("d_vision", d_vision)
        if fusion == "early" and d_vision != d_model:
            raise ValueError(
                f"d_vision ({d_vision}) must equal d_model ({d_model}) for early "
                f"fusion: image and text tokens share one sequence"
            )
        if gated and fusion != "cross":
            raise ValueError(f"gated=True needs fusion='cross', got fusion={fusion!r}")
        self.fusion = fusion
        self.pad_id = pad_id
        self.max_length = max_length
        if fusion == "early":
            self._build_early(
                vocab_size,
                image_size,
                patch_size,
                in_channels,
                d_model,
                num_heads,
                num_layers,
                d_ff,
                max_length,
                dropout,
                pad_id,
            )
        else:
            self.vision = VisionTransformer(
                image_size, patch_size, in_channels, d_vision, num_heads, num_layers, d_ff, dropout
            )
            self.text = TextTransformer(
                vocab_size, d_model, num_heads, num_layers, d_ff, max_length, dropout, pad_id
            )
        if fusion == "cross":
            self.cross_blocks = nn.ModuleList(
                CrossAttentionBlock(
                    d_model, num_heads, d_ff, kdim=d_vision, dropout=dropout, gated=gated
                )
                for _ in range(num_layers)
            )
        head_in = d_vision + d_model if fusion == "concat" else d_model
        self.head = _classifier_head(head_in, d_model, num_classes)

    # ------------------------------------------------------------------ early fusion

    def _build_early(
        self,
        vocab_size: int,
        image_size: int,
        patch_size: int,
        in_channels: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        max_length: int,
        dropout: float,
        pad_id: int,
    ) -> None:
        """One embedding per modality, one modality (token-type) embedding, one encoder."""
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.token_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.text_pos = nn.Parameter(torch.zeros(1, max_length, d_model))
        self.image_pos = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, d_model))
        self.type_embed = nn.Embedding(2, d_model)  # 0 = text token, 1 = image patch (ViLT)
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            d_model, num_heads, d_ff, num_layers, dropout=dropout, norm_first=True
        )
        for table in (
            self.token_embed.weight,
            self.text_pos,
            self.image_pos,
            self.type_embed.weight,
        ):
            nn.init.trunc_normal_(table, std=0.02)
        nn.init.zeros_(self.token_embed.weight[pad_id])

    def joint_sequence(
        self, images: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Early fusion's input: ``(x (B, L + P, d_model), joint_valid (B, L + P))``.

        Text first (``[CLS]`` at position 0), then the ``P`` image patches; each token
        gets its position embedding and its modality embedding (0 text, 1 image).
        Image patches are always valid; text padding stays masked.
        """
        text_type, image_type = self.type_embed.weight[0], self.type_embed.weight[1]
        text = self.token_embed(ids) + self.text_pos[:, : ids.shape[1]] + text_type
        patches = self.patch_embed(images) + self.image_pos + image_type
        patch_valid = torch.ones(patches.shape[:2], dtype=torch.bool, device=valid.device)
        x = self.dropout(torch.cat([text, patches], dim=1))
        return x, torch.cat([valid, patch_valid], dim=1)

    def _early(
        self, images: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, need_weights: bool
    ) -> FusionOutput:
        x, joint_valid = self.joint_sequence(images, ids, valid)
        x, attentions = self.encoder(x, mask=padding_mask(joint_valid), need_weights=need_weights)
        text_tokens, image_tokens = x[:, : ids.shape[1]], x[:, ids.shape[1] :]
        return FusionOutput(
            text_tokens, image_tokens, x[:, 0], {"joint": attentions} if need_weights else None
        )

    # ------------------------------------------------------------------ concat and cross

    def _concat(
        self, images: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, need_weights: bool
    ) -> FusionOutput:
        image_tokens, image_cls, image_attn = self.vision(images, need_weights=need_weights)
        text_tokens, text_cls, text_attn = self.text(ids, valid, need_weights=need_weights)
        pooled = torch.cat([image_cls, text_cls], dim=-1)  # two (B, d) vectors -> (B, 2d)
        attentions = {"image": image_attn, "text": text_attn} if need_weights else None
        return FusionOutput(text_tokens, image_tokens, pooled, attentions)

    def _cross(
        self, images: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, need_weights: bool
    ) -> FusionOutput:
        image_tokens, _, image_attn = self.vision(images, need_weights=need_weights)
        patches = image_tokens[:, 1:]  # the text attends to the P patches (not the image CLS)
        x = self.text.embed(ids)
        mask = padding_mask(valid)
        text_attn, cross_attn = [], []
        for layer, cross_block in zip(self.text.encoder.layers, self.cross_blocks, strict=True):
            x, weights = layer(x, mask=mask, need_weights=need_weights)  # words read words
            text_attn.append(weights)
            x, weights = cross_block(x, patches, need_weights=need_weights)  # ... then the image
            cross_attn.append(weights)
        x = self.text.encoder.final_norm(x)
        attentions = (
            {"image": image_attn, "text": text_attn, "cross": cross_attn} if need_weights else None
        )
        return FusionOutput(x, image_tokens, x[:, 0], attentions)

    # ------------------------------------------------------------------ public API

    def features(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> FusionOutput:
        """Run the encoders and the fusion, but not the head (see :class:`FusionOutput`)."""
        valid = check_text_inputs(ids, valid, self.max_length, self.pad_id)
        _check_batch(images, ids)
        if self.fusion == "concat":
            return self._concat(images, ids, valid, need_weights)
        if self.fusion == "early":
            return self._early(images, ids, valid, need_weights)
        return self._cross(images, ids, valid, need_weights)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]] | None]:
        """Classify image-text pairs.

        Args:
            images: ``(B, C, H, W)``.
            ids: ``(B, L)`` token ids starting with ``[CLS]``.
            valid: ``(B, L)`` bool, True = real token (default ``ids != pad_id``).
            need_weights: also return the attention maps (see :class:`FusionOutput`).

        Returns:
            ``(logits (B, num_classes), attentions or None)``.
        """
        output = self.features(images, ids, valid, need_weights)
        return self.head(output.pooled), output.attentions


class UnimodalBaseline(nn.Module):
    """A single-modality classifier with the same interface: it ignores the other input.

    ``modality="image"`` classifies the ViT's CLS vector, ``"text"`` the text
    encoder's. If such a model does as well as a fusion model, the task did not
    need both modalities.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        modality: str = "image",
        image_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 128,
        max_length: int = 16,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        check_positive_int("num_classes", num_classes)
        self.modality = modality
        self.pad_id = pad_id
        self.max_length = max_length
        if modality == "image":
            self.encoder = VisionTransformer(
                image_size, patch_size, in_channels, d_model, num_heads, num_layers, d_ff, dropout
            )
        else:
            self.encoder = TextTransformer(
                vocab_size, d_model, num_heads, num_layers, d_ff, max_length, dropout, pad_id
            )
        self.head = _classifier_head(d_model, d_model, num_classes)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]] | None]:
        """Classify from one modality; returns ``(logits, {modality: attentions} or None)``."""
        valid = check_text_inputs(ids, valid, self.max_length, self.pad_id)
        _check_batch(images, ids)
        if self.modality == "image":
            _, pooled, attentions = self.encoder(images, need_weights=need_weights)
        else:
            _, pooled, attentions = self.encoder(ids, valid, need_weights=need_weights)
        return self.head(pooled), ({self.modality: attentions} if need_weights else None)
