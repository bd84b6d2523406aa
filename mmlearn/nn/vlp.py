"""A small ALBEF/BLIP-style vision-language pretraining model (book section 3.1.2).

One image encoder (ViT) and one text encoder serve three objectives:

* **ITC**: the image ``[CLS]`` and the text ``[CLS]`` (the text encoder run *without*
  its cross-attention blocks, i.e. unimodal) are projected and contrasted;
* **ITM**: the same text encoder run *with* its cross-attention blocks (the fusion
  of :class:`~mmlearn.nn.MultimodalTransformer` with ``fusion="cross"``) classifies
  (image, text) pairs as matched or not, on true pairs and on hard negatives drawn
  from the ITC similarities;
* **LM**: a causal decoder that cross-attends to the image tokens predicts the caption
  word by word: by default a separate :class:`~mmlearn.nn.TransformerDecoder` (with a
  key-value cache for generation); with ``share_text_encoder=True`` the text encoder
  itself, run with a causal mask and its cross-attention blocks, and an output layer
  tied to its token embeddings.

As in BLIP, the unimodal and the fused text encoder share every weight except the
cross-attention blocks; BLIP's decoder also shares them except its self-attention
layers, and ``share_text_encoder=True`` goes one step further and shares those too.
After pretraining, :meth:`VisionLanguagePretrainer.to_classifier`
returns the fusion model with a new head, ready to fine-tune on a downstream task.
"""

from __future__ import annotations

import torch
from torch import nn

from mmlearn._checks import check_positive_int, check_tensor
from mmlearn.functional.transformer import causal_mask, padding_mask
from mmlearn.functional.vlp import itm_hard_negatives, itm_loss, lm_loss
from mmlearn.losses.vlp import ITCLoss
from mmlearn.nn.decoder import TransformerDecoder
from mmlearn.nn.fusion import MultimodalTransformer

__all__ = ["VisionLanguagePretrainer", "append_eos"]


def append_eos(ids: torch.Tensor, valid: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``[CLS] w1 .. wn [PAD]..`` -> ``[CLS] w1 .. wn [EOS] [PAD]..`` (the decoder's targets).

    Every row needs one padding position after its last real token.
    """
    check_tensor("ids", ids, ndim=2)
    check_tensor("valid", valid, ndim=2)
    lengths = valid.sum(dim=1)
    if bool((lengths >= ids.shape[1]).any()):
        raise ValueError(
            f"ids has no room for [EOS]: encode with max_length > {int(lengths.max())}"
        )
    out = ids.clone()
    out[torch.arange(len(ids), device=ids.device), lengths] = eos_id
    return out


class VisionLanguagePretrainer(nn.Module):
    """Image encoder + text encoder + fusion (ITM head) + image-grounded decoder (LM head).

    Args:
        vocab_size: number of token ids (captions and downstream questions).
        eos_id: the end-of-caption id; the decoder starts from the text's ``[CLS]``.
        pad_id: the padding id.
        itc, itm, lm: which objectives :meth:`forward` optimises (ablations switch one off).
        share_text_encoder: the LM objective runs the (causal) text encoder and the
            cross-attention blocks instead of the separate decoder, so it trains the
            weights that fine-tuning starts from.
        embed_dim: width of the ITC projections.
        image_size, patch_size, d_model, num_heads, num_layers, d_ff, max_length:
            the encoders' sizes, as in :class:`~mmlearn.nn.MultimodalTransformer`;
            the decoder has the same sizes.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        eos_id: int,
        pad_id: int = 0,
        itc: bool = True,
        itm: bool = True,
        lm: bool = True,
        embed_dim: int = 32,
        image_size: int = 32,
        patch_size: int = 8,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        max_length: int = 16,
        share_text_encoder: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        if not (itc or itm or lm):
            raise ValueError("at least one of itc, itm and lm must be True")
        self.config = {
            "image_size": image_size,
            "patch_size": patch_size,
            "d_model": d_model,
            "num_heads": num_heads,
            "num_layers": num_layers,
            "d_ff": d_ff,
            "max_length": max_length,
            "pad_id": pad_id,
        }
        self.vocab_size, self.eos_id, self.pad_id = vocab_size, eos_id, pad_id
        self.objectives = {"itc": itc, "itm": itm, "lm": lm}
        self.share_text_encoder = share_text_encoder
        self.encoder = MultimodalTransformer(vocab_size, 2, fusion="cross", **self.config)
        self.image_proj = nn.Linear(d_model, embed_dim)
        self.text_proj = nn.Linear(d_model, embed_dim)
        self.itc_loss = ITCLoss()
        self.decoder = (
            None
            if share_text_encoder
            else TransformerDecoder(
                vocab_size,
                d_model,
                num_heads,
                num_layers,
                d_ff,
                max_length,
                cross_attention=True,
                pad_id=pad_id,
            )
        )

    # ------------------------------------------------------------------ the three paths

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image tokens (B, 1 + P, d_model), ITC embedding (B, embed_dim))``."""
        tokens, cls, _ = self.encoder.vision(images)
        return tokens, self.image_proj(cls)

    def encode_text(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The unimodal text encoder's ITC embedding ``(B, embed_dim)`` (no cross-attention)."""
        _, cls, _ = self.encoder.text(ids, valid)
        return self.text_proj(cls)

    def _fused_tokens(
        self, image_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = self.encoder.text.embed(ids)
        for layer, block in zip(
            self.encoder.text.encoder.layers, self.encoder.cross_blocks, strict=True
        ):
            x, _ = layer(x, mask=mask)
            x, _ = block(x, image_tokens[:, 1:])
        return self.encoder.text.encoder.final_norm(x)

    def fuse(
        self, image_tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """The fused ``[CLS]`` ``(B, d_model)``: text layers interleaved with cross-attention."""
        return self._fused_tokens(image_tokens, ids, padding_mask(valid))[:, 0]

    def lm_logits(self, image_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, L, vocab_size)`` of ``ids`` given the image tokens."""
        if not self.share_text_encoder:
            return self.decoder(ids, image_tokens).logits
        length = ids.shape[1]
        mask = causal_mask(length, device=ids.device) & padding_mask(ids != self.pad_id)
        hidden = self._fused_tokens(image_tokens, ids, mask)
        return hidden @ self.encoder.text.token_embed.weight.T  # tied output layer

    def itm_logits(
        self, image_tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``(B, 2)`` matched / not-matched logits of (image, text) pairs."""
        return self.encoder.head(self.fuse(image_tokens, ids, valid))

    @torch.no_grad()
    def similarity(
        self, images: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Cosine similarity ``(N_img, N_txt)`` of the ITC embeddings (for retrieval)."""
        _, image = self.encode_image(images)
        text = self.encode_text(ids, valid)
        return nn.functional.normalize(image, dim=-1) @ nn.functional.normalize(text, dim=-1).T

    # ------------------------------------------------------------------ training

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor,
        *,
        exclude: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The losses of the enabled objectives and their sum ``"loss"``.

        Args:
            images: ``(B, C, H, W)``; ``ids``, ``valid``: ``(B, L)`` captions ``[CLS] ...``
                with at least one padding column (the decoder appends ``[EOS]`` there).
            exclude: ``(B, B)`` bool, pairs never drawn as ITM negatives (same caption).
            generator: for the ITM negative draws.
        """
        tokens, image_embeds = self.encode_image(images)
        text_embeds = self.encode_text(ids, valid)
        losses = {}
        if self.objectives["itc"]:
            losses["itc"] = self.itc_loss(image_embeds, text_embeds)
        if self.objectives["itm"]:
            losses["itm"] = self._itm(
                tokens, image_embeds, text_embeds, ids, valid, exclude, generator
            )
        if self.objectives["lm"]:
            targets = append_eos(ids, valid, self.eos_id)
            logits = self.lm_logits(tokens, targets)
            losses["lm"] = lm_loss(logits, targets, pad_id=self.pad_id)
        losses["loss"] = sum(losses.values())
        return losses

    def _itm(
        self,
        tokens: torch.Tensor,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor,
        exclude: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """ITM on the B true pairs, B (image, hard text) and B (hard image, text) pairs."""
        with torch.no_grad():
            logits = self.itc_loss.scale() * (
                nn.functional.normalize(image_embeds, dim=-1)
                @ nn.functional.normalize(text_embeds, dim=-1).T
            )
        negative_text, negative_image = itm_hard_negatives(
            logits, exclude=exclude, generator=generator
        )
        all_tokens = torch.cat([tokens, tokens, tokens[negative_image]])
        all_ids = torch.cat([ids, ids[negative_text], ids])
        all_valid = torch.cat([valid, valid[negative_text], valid])
        pair_logits = self.itm_logits(all_tokens, all_ids, all_valid)
        batch = len(ids)
        return itm_loss(pair_logits[:batch], pair_logits[batch:])

    # ------------------------------------------------------------------ after pretraining

    def to_classifier(self, num_classes: int) -> MultimodalTransformer:
        """The pretrained fusion model (ViT, text encoder, cross blocks) with a new head."""
        model = MultimodalTransformer(self.vocab_size, num_classes, fusion="cross", **self.config)
        state = {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise RuntimeError(
                f"weights do not transfer: missing {missing}, unexpected {unexpected}"
            )
        return model.to(next(self.parameters()).device)

    @torch.no_grad()
    def caption_stepper(self, images: torch.Tensor, use_cache: bool = True):  # noqa: ANN201
        """A stepper (:mod:`mmlearn.generation`) that captions ``images``.

        The separate decoder gets a :class:`~mmlearn.generation.DecoderStepper` (cached
        unless ``use_cache=False``); the shared text encoder a ``RecomputeStepper``.
        """
        from mmlearn.generation import DecoderStepper, RecomputeStepper  # imports mmlearn.nn

        tokens, _ = self.encode_image(images)
        if self.share_text_encoder:  # the encoder has no cache: recompute every step
            return RecomputeStepper(lambda ids, memory: self.lm_logits(memory, ids), memory=tokens)
        return DecoderStepper(self.decoder, tokens, use_cache=use_cache)
