"""A causal Transformer decoder with a key-value cache (book section 3.1.3).

One pre-LN layer is ``x = x + SelfAttn(LN(x), causal)``, then, only when the
decoder is image-conditioned, ``x = x + CrossAttn(LN(x), memory)``, then
``x = x + FFN(LN(x))``. Without cross-attention the stack is a decoder-only
language model (GPT-style); with it, the decoder of a captioner or of BLIP's
language-modelling head.

Key-value cache. During generation the tokens before step ``t`` never change,
and causal attention means their keys and values never change either. A
:class:`KVCache` keeps, for every layer, the self-attention keys and values
``(B, h, T, d_head)`` of the ``T`` tokens seen so far, plus the projected
image keys and values (computed once). Each new token then costs one query
against ``T`` cached keys instead of recomputing all ``T + 1`` positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmlearn._checks import check_positive_int, check_probability, check_tensor
from mmlearn.functional.transformer import merge_heads, rotary_embedding, split_heads
from mmlearn.nn.attention import MultiHeadAttention, _fused_attention
from mmlearn.nn.feedforward import FeedForward

__all__ = ["DecoderLayer", "DecoderOutput", "KVCache", "TransformerDecoder"]


@dataclass
class KVCache:
    """Cached keys and values of a :class:`TransformerDecoder`, one entry per layer.

    Attributes:
        keys, values: per layer, the self-attention keys and values
            ``(B, h, T, d_head)`` of the ``T`` positions already processed.
        valid: ``(B, T)`` bool, True = a real position (False = padding, never attended to).
        cross: per layer, the projected memory ``(keys, values)`` ``(B, h, P, d_head)``,
            filled on the first call; empty for a decoder without cross-attention.
        memory_valid: ``(B, P)`` bool mask of the memory tokens, or None (all real).

    Create one with :meth:`TransformerDecoder.new_cache`; the decoder appends to it.
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    valid: torch.Tensor | None = None
    cross: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    memory_valid: torch.Tensor | None = None
    batch_size: int | None = None

    @property
    def length(self) -> int:
        """The number of positions ``T`` already in the cache."""
        return 0 if self.valid is None else self.valid.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the cached tensors (self-attention and cross-attention)."""
        tensors = [*self.keys, *self.values, *(t for pair in self.cross for t in pair)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` (in that order): beam search's reordering and expansion.

        Row ``i`` of the new cache is row ``indices[i]`` of the old one, so
        ``arange(B).repeat_interleave(k)`` expands every sequence to ``k`` beams.
        """
        check_tensor("indices", indices, ndim=1)
        if indices.dtype != torch.long:
            raise TypeError(f"indices must be a long tensor, got {indices.dtype}")
        self.keys = [k.index_select(0, indices) for k in self.keys]
        self.values = [v.index_select(0, indices) for v in self.values]
        self.cross = [
            (k.index_select(0, indices), v.index_select(0, indices)) for k, v in self.cross
        ]
        if self.valid is not None:
            self.valid = self.valid.index_select(0, indices)
        if self.memory_valid is not None:
            self.memory_valid = self.memory_valid.index_select(0, indices)
        self.batch_size = indices.shape[0]


@dataclass
class DecoderOutput:
    """What :meth:`TransformerDecoder.forward` returns.

    Attributes:
        logits: ``(B, L, vocab_size)`` next-token logits of the ``L`` new positions.
        hidden: ``(B, L, d_model)`` the final (normalised) hidden states.
        cross_attentions: per layer ``(B, h, L, P)`` when asked for, else None.
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    cross_attentions: list[torch.Tensor] | None = None


def _heads(layer: nn.Linear, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    return split_heads(layer(x), num_heads)


class DecoderLayer(nn.Module):
    """A pre-LN decoder layer: causal self-attention, optional cross-attention, feed-forward.

    Args:
        d_model, num_heads, d_ff, dropout: the sizes of the sub-layers.
        cross_attention: add the cross-attention sub-layer (to image tokens).
        memory_dim: width of the memory (image) tokens, default ``d_model``.
        rope_base: rotate the self-attention queries and keys by their positions
            (:func:`~mmlearn.functional.rotary_embedding` with this base), or None.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        cross_attention: bool = False,
        memory_dim: int | None = None,
        rope_base: float | None = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.rope_base = num_heads, rope_base
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5) if cross_attention else None
        self.cross_attn = (
            MultiHeadAttention(
                d_model, num_heads, dropout=dropout, kdim=memory_dim, vdim=memory_dim
            )
            if cross_attention
            else None
        )
        self.norm3 = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def _attend(
        self,
        attn: MultiHeadAttention,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention on heads already split; returns the projected output and weights."""
        dropout_p = attn.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
            heads = F.dropout(weights, dropout_p, training=self.training) @ v
        else:
            heads, weights = _fused_attention(q, k, v, mask, dropout_p), None
        return attn.out_proj(merge_heads(heads)), weights

    def queries_keys(self, h: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention queries and keys ``(B, h, L, d_head)`` of the normed input ``h``,
        rotated by their positions ``start, start + 1, ...`` when the layer uses RoPE."""
        q = _heads(self.self_attn.q_proj, h, self.num_heads)
        k = _heads(self.self_attn.k_proj, h, self.num_heads)
        if self.rope_base is None:
            return q, k
        return (
            rotary_embedding(q, start, self.rope_base),
            rotary_embedding(k, start, self.rope_base),
        )

    def self_attention(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal self-attention of ``x`` over the cached and the new positions.

        Returns ``(output, keys, values)``, the keys and values covering all positions
        (with RoPE, the cached keys are stored already rotated).
        """
        h = self.norm1(x)
        q, k = self.queries_keys(h, 0 if past is None else past[0].shape[2])
        v = _heads(self.self_attn.v_proj, h, self.num_heads)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out, _ = self._attend(self.self_attn, q, k, v, mask, need_weights=False)
        return out, k, v

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the memory once into cross-attention keys and values ``(B, h, P, d_head)``."""
        if self.cross_attn is None:
            raise ValueError("memory was given but the layer has no cross-attention")
        return (
            _heads(self.cross_attn.k_proj, memory, self.num_heads),
            _heads(self.cross_attn.v_proj, memory, self.num_heads),
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """Update the new tokens ``x (B, L, d_model)``.

        Args:
            mask: ``(B, 1, L, T + L)`` bool self-attention mask (causal and padding).
            past: cached ``(keys, values)`` of the ``T`` earlier positions, or None.
            memory_kv: projected memory from :meth:`memory_kv` (cross-attention layers only).
            memory_mask: ``(B, 1, 1, P)`` bool, True = a real memory token.

        Returns:
            ``(x, (keys, values) of all T + L positions, cross-attention weights or None)``.
        """
        attended, k, v = self.self_attention(x, mask, past)
        x = x + self.dropout(attended)
        weights = None
        if self.cross_attn is not None:
            if memory_kv is None:
                raise ValueError("this layer has cross-attention: memory is required")
            q = _heads(self.cross_attn.q_proj, self.norm2(x), self.num_heads)
            attended, weights = self._attend(
                self.cross_attn, q, *memory_kv, memory_mask, need_weights
            )
            x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.norm3(x)))
        return x, (k, v), weights


class TransformerDecoder(nn.Module):
    """Token and position embeddings, ``num_layers`` :class:`DecoderLayer`, a vocabulary head.

    With ``cross_attention=False`` it is a decoder-only language model; with
    ``cross_attention=True`` every layer also attends to ``memory`` (image tokens).

    Args:
        vocab_size: number of token ids.
        d_model, num_heads, num_layers, d_ff, dropout: the layers.
        max_length: the longest sequence, cache included (the number of learned
            position embeddings).
        positions: ``"learned"``, a learned vector added to each position's embedding
            (GPT-2, BERT), or ``"rope"``, rotary embeddings applied to the queries and
            keys of every self-attention (RoFormer, LLaMA, Qwen): attention then sees
            relative positions.
        rope_base: the base of the rotary frequencies (``"rope"`` only).
        cross_attention: add cross-attention to every layer.
        memory_dim: width of the memory tokens (default ``d_model``).
        tie_embeddings: the output head reuses the token-embedding matrix (GPT-2, BLIP).
        pad_id: the padding id (its embedding is kept at zero), or None.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        max_length: int = 64,
        dropout: float = 0.0,
        *,
        cross_attention: bool = False,
        memory_dim: int | None = None,
        tie_embeddings: bool = False,
        pad_id: int | None = None,
        positions: str = "learned",
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {positions!r}")
        if positions == "rope" and (not isinstance(rope_base, int | float) or rope_base <= 1):
            raise ValueError(f"rope_base must be a number > 1, got {rope_base!r}")
        if positions == "rope" and (d_model // max(num_heads, 1)) % 2 != 0:
            raise ValueError(
                f"positions='rope' needs an even head width d_model / num_heads, "
                f"got {d_model} / {num_heads}"
            )
        for name, value in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("num_layers", num_layers),
            ("max_length", max_length),
        ):
            check_positive_int(name, value)
        check_probability("dropout", dropout)
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id must be in [0, {vocab_size}), got {pad_id}")
        self.vocab_size, self.d_model, self.max_length = vocab_size, d_model, max_length
        self.cross_attention, self.pad_id, self.positions = cross_attention, pad_id, positions
        self.token_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, max_length, d_model)) if positions == "learned" else None
        )
        rope = rope_base if positions == "rope" else None
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout, cross_attention, memory_dim, rope)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.output = nn.Linear(d_model, vocab_size, bias=not tie_embeddings)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        if pad_id is not None:
            nn.init.zeros_(self.token_embed.weight[pad_id])
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if tie_embeddings:
            self.output.weight = self.token_embed.weight

    def new_cache(self) -> KVCache:
        """An empty cache; pass it to :meth:`forward`, which fills it step by step."""
        return KVCache()

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, L, d_model)`` without positions (for ``inputs_embeds``)."""
        check_tensor("ids", ids, ndim=2)
        if ids.dtype != torch.long:
            raise TypeError(f"ids must be a long tensor of token ids, got {ids.dtype}")
        return self.token_embed(ids)

    def _inputs(
        self, ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, past_length: int
    ) -> torch.Tensor:
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of ids and inputs_embeds")
        x = self.embed_tokens(ids) if ids is not None else inputs_embeds
        check_tensor("inputs_embeds", x, ndim=3, floating=True)
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"inputs_embeds must have last dimension {self.d_model}, got shape {tuple(x.shape)}"
            )
        end = past_length + x.shape[1]
        if end > self.max_length:
            raise ValueError(
                f"sequence length {end} (cache {past_length} + new "
                f"{x.shape[1]}) exceeds max_length ({self.max_length})"
            )
        return x if self.pos_embed is None else x + self.pos_embed[:, past_length:end]

    def _check_cache(self, cache: KVCache | None, batch: int) -> None:
        if cache is not None and cache.batch_size is not None and cache.batch_size != batch:
            raise ValueError(
                f"cache holds batch size {cache.batch_size}, but the input has batch size {batch}"
            )

    def _memory(
        self,
        memory: torch.Tensor | None,
        memory_valid: torch.Tensor | None,
        cache: KVCache | None,
        batch: int,
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]] | None, torch.Tensor | None]:
        """Projected memory per layer (from the cache when present) and its key mask."""
        if not self.cross_attention:
            if memory is not None:
                raise ValueError("memory was given but the decoder has no cross-attention")
            return None, None
        if cache is not None and cache.cross:
            projected, valid = cache.cross, cache.memory_valid
        else:
            self._check_memory(memory, memory_valid, batch)
            projected = [layer.memory_kv(memory) for layer in self.layers]
            valid = memory_valid
            if cache is not None:
                cache.cross, cache.memory_valid = projected, valid
        return projected, None if valid is None else valid[:, None, None, :]

    @staticmethod
    def _check_memory(
        memory: torch.Tensor | None, memory_valid: torch.Tensor | None, batch: int
    ) -> None:
        if memory is None:
            raise ValueError("memory is required: the decoder has cross-attention")
        check_tensor("memory", memory, ndim=3, floating=True)
        if memory.shape[0] != batch:
            raise ValueError(
                f"batch sizes of memory ({memory.shape[0]}) and the input ({batch}) must be equal"
            )
        if memory_valid is not None and (
            not isinstance(memory_valid, torch.Tensor)
            or memory_valid.dtype != torch.bool
            or memory_valid.shape != memory.shape[:2]
        ):
            raise ValueError(
                f"memory_valid must be a bool tensor of shape {tuple(memory.shape[:2])}"
            )

    @staticmethod
    def _self_mask(valid: torch.Tensor, new: int) -> torch.Tensor:
        """``(B, 1, L, T + L)``: causal over all positions and no padding keys."""
        total = valid.shape[1]
        causal = torch.ones(new, total, dtype=torch.bool, device=valid.device).tril(total - new)
        return causal[None, None] & valid[:, None, None, :]

    def forward(
        self,
        ids: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        memory_valid: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> DecoderOutput:
        """Logits for the new positions ``ids (B, L)`` (or ``inputs_embeds (B, L, d_model)``).

        Position ``t`` sees positions ``0..t`` (cached ones included) and the memory.

        Args:
            memory: ``(B, P, memory_dim)`` image tokens (cross-attention decoders only);
                with a cache it is needed on the first call only.
            cache: a :class:`KVCache`; the new keys and values are appended to it.
            valid: ``(B, L)`` bool, False marks padding among the new positions
                (default: ``ids != pad_id`` when ``pad_id`` is set, else all True).
            memory_valid: ``(B, P)`` bool, False marks padding memory tokens.
            need_weights: return the cross-attention weights of every layer.
        """
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        past = 0 if cache is None else cache.length
        x = self._inputs(ids, inputs_embeds, past)
        batch, new = x.shape[:2]
        self._check_cache(cache, batch)
        valid = self._valid(ids, valid, x)
        memory_kv, memory_mask = self._memory(memory, memory_valid, cache, batch)
        all_valid = (
            valid
            if cache is None or cache.valid is None
            else torch.cat([cache.valid, valid], dim=1)
        )
        mask = self._self_mask(all_valid, new)
        cross = []
        for i, layer in enumerate(self.layers):
            layer_past = (cache.keys[i], cache.values[i]) if past else None
            x, (k, v), weights = layer(
                x,
                mask,
                layer_past,
                None if memory_kv is None else memory_kv[i],
                memory_mask,
                need_weights,
            )
            cross.append(weights)
            if cache is not None:
                _store(cache, i, k, v)
        if cache is not None:
            cache.valid, cache.batch_size = all_valid, batch
        hidden = self.final_norm(x)
        return DecoderOutput(
            self.output(hidden), hidden, cross if need_weights and self.cross_attention else None
        )

    def _valid(
        self, ids: torch.Tensor | None, valid: torch.Tensor | None, x: torch.Tensor
    ) -> torch.Tensor:
        if valid is not None:
            check_tensor("valid", valid, ndim=2)
            if valid.dtype != torch.bool or valid.shape != x.shape[:2]:
                raise ValueError(
                    f"valid must be bool of shape {tuple(x.shape[:2])}, "
                    f"got {valid.dtype} {tuple(valid.shape)}"
                )
            return valid
        if ids is not None and self.pad_id is not None:
            return ids != self.pad_id
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def _store(cache: KVCache, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    if len(cache.keys) <= layer:
        cache.keys.append(keys)
        cache.values.append(values)
    else:
        cache.keys[layer], cache.values[layer] = keys, values
