"""CLIP-style dual encoders: two towers, two projections, one shared embedding space.

* :class:`SmallConvEncoder`: a tiny CNN image tower for 8x8 digits or 32x32 shapes;
* :class:`CLIPModel`: any image tower + any text tower, trained from scratch with
  :class:`mmlearn.losses.ClipLoss`; :func:`make_small_clip` builds a small one;
* :class:`LiTModel`: a locked (frozen) pretrained text tower, MiniLM, and a
  trainable image tower: only the image tower and the two projections learn.

Both models return L2-normalised features, so ``image_features @ text_features.T``
is a matrix of cosine similarities, and the logit scale ``exp(s)`` turns it into
the logits of {eq}`eq-clip-loss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_positive_int, check_tensor
from mmlearn.nn.text import TextTransformer
from mmlearn.pretrained import encode_sentences, load_minilm

__all__ = ["CLIPModel", "LiTModel", "SmallConvEncoder", "make_small_clip"]

DEFAULT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOGIT_SCALE = math.log(100)  # CLIP caps the scale at 100


class SmallConvEncoder(nn.Module):
    """Three 3x3 convolutions, a 2x2 max-pool, pooling to a 4x4 grid, a linear layer.

    The final 4x4 grid keeps *where* the strokes are (a digit is mostly its
    layout); pooling everything into one vector would blur a 6 and a 9 into
    nearly the same features. Works for any image of at least 8x8 (the 8x8
    digits, the 32x32 shapes). ``forward(images (B, C, H, W)) -> (B, out_dim)``.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, out_dim: int = 64):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("out_dim", out_dim)):
            check_positive_int(name, value)
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 4 * 4, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_tensor("images", images, ndim=4, floating=True)
        if images.shape[1] != self.in_channels or min(images.shape[2:]) < 8:
            raise ValueError(
                f"images must be (B, {self.in_channels}, H, W) with H, W >= 8, "
                f"got shape {tuple(images.shape)}"
            )
        return self.head(self.features(images))


def _pooled(output: torch.Tensor | tuple) -> torch.Tensor:
    """A tower's sentence/image vector: the tensor itself, or ``pooled`` of mmlearn's
    ``(tokens, pooled, attentions)`` tuple (as VisionTransformer and TextTransformer return)."""
    return output[1] if isinstance(output, tuple) else output


class _DualEncoder(nn.Module):
    """What CLIP and LiT share: an image tower, two projections and the logit scale.

    The model owns its scale: it is stored as ``s = ln(1 / tau)`` and used as
    ``exp(s)``, unclamped, so its gradient is never silently zero. After each
    optimiser step, :meth:`clamp_logit_scale_` clamps ``s`` into
    ``[0, max_logit_scale]`` in place, as open_clip's training loop does
    (:func:`mmlearn.train.train` calls it for you). Pair the model with
    ``ClipLoss(learnable=False)``.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        image_dim: int,
        text_dim: int,
        embed_dim: int,
        init_logit_scale: float,
        max_logit_scale: float,
    ):
        super().__init__()
        for name, value in (
            ("image_dim", image_dim),
            ("text_dim", text_dim),
            ("embed_dim", embed_dim),
        ):
            check_positive_int(name, value)
        if not math.isfinite(init_logit_scale) or not math.isfinite(max_logit_scale):
            raise ValueError(
                "init_logit_scale and max_logit_scale must be finite, got "
                f"{init_logit_scale!r} and {max_logit_scale!r}"
            )
        if init_logit_scale > max_logit_scale:
            raise ValueError(
                f"init_logit_scale ({init_logit_scale!r}) must not exceed "
                f"max_logit_scale ({max_logit_scale!r})"
            )
        self.image_encoder = image_encoder
        self.image_projection = nn.Linear(image_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)

    def scale(self) -> torch.Tensor:
        """``exp(s)``: what multiplies the cosine similarities."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp ``s`` into ``[0, max_logit_scale]`` in place; call it after ``optimizer.step()``.

        A scale frozen by the user (``requires_grad=False``) is left as set.
        """
        if self.logit_scale.requires_grad:
            self.logit_scale.clamp_(0.0, self.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim)`` L2-normalised image features."""
        return F.normalize(self.image_projection(_pooled(self.image_encoder(images))), dim=-1)


class CLIPModel(_DualEncoder):
    """A CLIP-style dual encoder (Radford et al., 2021).

    ``encode_image``: image tower -> linear projection -> L2 normalisation;
    ``encode_text`` likewise with the text tower. A tower may return a
    ``(B, dim)`` tensor or mmlearn's ``(tokens, pooled, attentions)`` tuple
    (then ``pooled`` is used). The text tower is called as
    ``text_encoder(ids, valid)``.

    Args:
        image_encoder, text_encoder: the two towers.
        image_dim, text_dim: widths of their outputs.
        embed_dim: width of the shared embedding space.
        init_logit_scale: initial ``s = ln(1 / tau)``.
        max_logit_scale: the cap on ``s`` applied by :meth:`clamp_logit_scale_` (``ln 100``).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_dim: int,
        text_dim: int,
        embed_dim: int,
        init_logit_scale: float = DEFAULT_LOGIT_SCALE,
        max_logit_scale: float = MAX_LOGIT_SCALE,
    ):
        super().__init__(
            image_encoder, image_dim, text_dim, embed_dim, init_logit_scale, max_logit_scale
        )
        self.text_encoder = text_encoder

    def encode_text(self, ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, embed_dim)`` L2-normalised text features of token ids ``(B, L)``."""
        return F.normalize(self.text_projection(_pooled(self.text_encoder(ids, valid))), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_features, text_features, logit_scale.exp())``."""
        return self.encode_image(images), self.encode_text(ids, valid), self.scale()


def make_small_clip(
    vocab_size: int,
    max_length: int,
    in_channels: int = 1,
    embed_dim: int = 32,
    width: int = 16,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
) -> CLIPModel:
    """A CLIP that trains in seconds on a CPU: :class:`SmallConvEncoder` + :class:`TextTransformer`.

    Args:
        vocab_size, max_length: of the :class:`~mmlearn.data.tokenizer.WordTokenizer` used.
        in_channels: 1 for digits, 3 for the shapes world.
        embed_dim: the shared space; width: the CNN's channels;
        d_model, num_heads, num_layers: the text transformer (``d_ff = 4 * d_model``).
    """
    image_encoder = SmallConvEncoder(in_channels, width=width, out_dim=d_model)
    text_encoder = TextTransformer(
        vocab_size, d_model, num_heads, num_layers, 4 * d_model, max_length
    )
    return CLIPModel(image_encoder, text_encoder, d_model, d_model, embed_dim)


class LiTModel(_DualEncoder):
    """A dual encoder with a locked, pretrained text tower (all-MiniLM-L6-v2).

    LiT (Zhai et al., 2022) locks a pretrained tower and trains the other to
    match it; here the locked tower is the text one: MiniLM with mean pooling,
    frozen, in eval mode and run without gradients. Only the image tower, the
    two projections and the logit scale train. Since the frozen text tower
    always gives the same vector for the same sentence, each sentence is
    embedded once and cached (a data set of a few dozen distinct captions
    then costs a few dozen MiniLM passes in total).

    Args:
        image_encoder: the trainable image tower (returns ``(B, image_dim)`` or
            mmlearn's ``(tokens, pooled, attentions)``).
        image_dim: its output width.
        embed_dim: width of the shared space.
        text_model, tokenizer: from :func:`mmlearn.pretrained.load_minilm`
            (loaded here when omitted).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        image_dim: int,
        embed_dim: int,
        text_model: nn.Module | None = None,
        tokenizer=None,
        init_logit_scale: float = DEFAULT_LOGIT_SCALE,
        max_logit_scale: float = MAX_LOGIT_SCALE,
    ):
        if (text_model is None) != (tokenizer is None):
            raise ValueError("text_model and tokenizer must be given together (or neither)")
        if text_model is None:
            text_model, tokenizer = load_minilm()
        super().__init__(
            image_encoder,
            image_dim,
            text_model.config.hidden_size,
            embed_dim,
            init_logit_scale,
            max_logit_scale,
        )
        self.text_model = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._text_cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> LiTModel:
        """Switch the trainable parts; the locked text tower always stays in eval mode."""
        super().train(mode)
        self.text_model.eval()
        return self

    @torch.no_grad()
    def frozen_text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """MiniLM's ``(len(texts), hidden)`` sentence embeddings (mean pooled), cached per text."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        if len(texts) == 0:
            raise ValueError("texts must not be empty")
        missing = sorted(set(texts) - self._text_cache.keys())
        if missing:
            embeddings = encode_sentences(self.text_model, self.tokenizer, missing, normalize=False)
            self._text_cache.update(zip(missing, embeddings.cpu(), strict=True))
        device = self.text_projection.weight.device
        return torch.stack([self._text_cache[t] for t in texts]).to(device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), embed_dim)`` L2-normalised text features (frozen MiniLM + projection)."""
        return F.normalize(self.text_projection(self.frozen_text_embeddings(texts)), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        texts: Sequence[str],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_features, text_features, logit_scale.exp())``."""
        return self.encode_image(images), self.encode_text(texts), self.scale()
