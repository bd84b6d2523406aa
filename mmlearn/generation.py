"""Autoregressive decoding: greedy, beam search and sampling (book section 3.1.3).

Every strategy talks to the model through a *stepper*, an object with two methods:

* ``step(ids (B, L)) -> logits (B, vocab_size)``: feed the next ``L`` tokens of every
  sequence (the whole prompt on the first call, then one token per call) and return
  the logits of the token that follows them;
* ``reorder(indices (B',))``: keep rows ``indices`` of the model's state, in that
  order (beam search uses it to expand each prompt to ``k`` beams and to follow
  the surviving beams).

:class:`DecoderStepper` adapts :class:`mmlearn.nn.TransformerDecoder` (with or
without its key-value cache, with or without image tokens as cross-attention
memory or as a prefix of embeddings); :class:`RecomputeStepper` adapts any
function that maps a full token sequence to logits, for example
``ImageCaptioner.decode``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from mmlearn._checks import check_positive, check_positive_int, check_tensor
from mmlearn.nn.decoder import KVCache, TransformerDecoder

__all__ = [
    "DecoderStepper",
    "GenerationOutput",
    "RecomputeStepper",
    "Stepper",
    "beam_search",
    "generate",
    "greedy",
    "sample",
]


class Stepper(Protocol):
    """What a decoding strategy needs from a model (see the module docstring)."""

    def step(self, ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, indices: torch.Tensor) -> None: ...


@dataclass
class GenerationOutput:
    """The result of decoding.

    Attributes:
        sequences: ``(B, L0 + n)`` the prompt followed by the ``n`` generated tokens;
            a sequence that produced ``eos_id`` is padded with ``pad_id`` after it.
        scores: ``(B,)`` the log-probability of the generated tokens (beam search:
            divided by ``length ** length_penalty``).
        logits: ``(B, n, vocab_size)`` the logits each step returned (greedy and
            sampling; None for beam search).
    """

    sequences: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor | None = None


class DecoderStepper:
    """Drive a :class:`~mmlearn.nn.TransformerDecoder` one step at a time.

    Args:
        decoder: the decoder (put it in eval mode first).
        memory: ``(B, P, memory_dim)`` image tokens for a cross-attention decoder.
        memory_valid: ``(B, P)`` bool mask of the memory tokens.
        prefix_embeds: ``(B, P, d_model)`` embeddings placed before the prompt's tokens
            (LLaVA-style image tokens for a decoder-only language model).
        use_cache: keep a :class:`~mmlearn.nn.KVCache` (one query per new token) or
            recompute the whole sequence at every step.
    """

    def __init__(
        self,
        decoder: TransformerDecoder,
        memory: torch.Tensor | None = None,
        *,
        memory_valid: torch.Tensor | None = None,
        prefix_embeds: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> None:
        if not isinstance(decoder, TransformerDecoder):
            raise TypeError(f"decoder must be a TransformerDecoder, got {type(decoder).__name__}")
        if prefix_embeds is not None:
            check_tensor("prefix_embeds", prefix_embeds, ndim=3, floating=True)
        self.decoder, self.use_cache = decoder, use_cache
        self.memory, self.memory_valid, self.prefix = memory, memory_valid, prefix_embeds
        self.cache: KVCache | None = decoder.new_cache() if use_cache else None
        self.ids: torch.Tensor | None = None  # every token fed so far (recompute mode)

    def _inputs(self, ids: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of ``ids`` (with the prefix on the first call) and their validity."""
        embeds = self.decoder.embed_tokens(ids)
        pad = self.decoder.pad_id
        valid = ids != pad if pad is not None else torch.ones_like(ids, dtype=torch.bool)
        if first and self.prefix is not None:
            if self.prefix.shape[0] != ids.shape[0]:
                raise ValueError(
                    f"batch sizes of prefix_embeds ({self.prefix.shape[0]}) "
                    f"and ids ({ids.shape[0]}) must be equal"
                )
            ones = torch.ones(self.prefix.shape[:2], dtype=torch.bool, device=ids.device)
            embeds, valid = torch.cat([self.prefix, embeds], 1), torch.cat([ones, valid], 1)
        return embeds, valid

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ``ids (B, L)``; return the next-token logits ``(B, vocab_size)``."""
        if self.use_cache:
            first = self.cache.length == 0
            embeds, valid = self._inputs(ids, first)
            out = self.decoder(
                inputs_embeds=embeds,
                memory=self.memory if first else None,
                cache=self.cache,
                valid=valid,
                memory_valid=self.memory_valid,
            )
        else:
            self.ids = ids if self.ids is None else torch.cat([self.ids, ids], dim=1)
            embeds, valid = self._inputs(self.ids, True)
            out = self.decoder(
                inputs_embeds=embeds,
                memory=self.memory,
                valid=valid,
                memory_valid=self.memory_valid,
            )
        return out.logits[:, -1]

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` of the cache, the memory, the prefix and the tokens."""
        if self.cache is not None:
            self.cache.reorder(indices)
        self.memory, self.memory_valid, self.prefix, self.ids = (
            None if t is None else t.index_select(0, indices)
            for t in (self.memory, self.memory_valid, self.prefix, self.ids)
        )


class RecomputeStepper:
    """Adapt ``logits_fn(ids (B, L), **context) -> logits (B, L, vocab_size)``; no cache.

    Every step re-runs ``logits_fn`` on the whole sequence. ``context`` holds tensors
    whose first dimension is the batch (for example ``memory=captioner.encode(images)``);
    they are reordered with the sequences.
    """

    def __init__(self, logits_fn: Callable[..., torch.Tensor], **context: torch.Tensor) -> None:
        if not callable(logits_fn):
            raise TypeError("logits_fn must be callable")
        self.logits_fn, self.context = logits_fn, context
        self.ids: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Append ``ids (B, L)`` and return the next-token logits ``(B, vocab_size)``."""
        self.ids = ids if self.ids is None else torch.cat([self.ids, ids], dim=1)
        return self.logits_fn(self.ids, **self.context)[:, -1]

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` of the sequences and of every context tensor."""
        self.context = {k: v.index_select(0, indices) for k, v in self.context.items()}
        if self.ids is not None:
            self.ids = self.ids.index_select(0, indices)


def _check_prompt(prompt: torch.Tensor) -> None:
    check_tensor("prompt", prompt, ndim=2)
    if prompt.dtype != torch.long or prompt.shape[1] == 0:
        raise ValueError(
            f"prompt must be a long tensor (B, L0) with L0 >= 1, got "
            f"{prompt.dtype} {tuple(prompt.shape)}"
        )


def _check_ids(eos_id: int | None, pad_id: int) -> None:
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int)):
        raise ValueError(f"eos_id must be an int or None, got {eos_id!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")


def _decode(
    stepper: Stepper,
    prompt: torch.Tensor,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
    eos_id: int | None,
    pad_id: int,
) -> GenerationOutput:
    """One token per step, picked by ``choose(logits) -> (B,)``, until EOS or the limit."""
    _check_prompt(prompt)
    check_positive_int("max_new_tokens", max_new_tokens)
    _check_ids(eos_id, pad_id)
    batch = prompt.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=prompt.device)
    scores = torch.zeros(batch, device=prompt.device)
    tokens, all_logits, feed = [], [], prompt
    for _ in range(max_new_tokens):
        logits = stepper.step(feed)
        next_ids = choose(logits).masked_fill(finished, pad_id)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(1, next_ids[:, None])[:, 0]
        scores += logp.masked_fill(finished, 0.0)
        tokens.append(next_ids)
        all_logits.append(logits)
        if eos_id is not None:
            finished |= next_ids == eos_id
        if finished.all():
            break
        feed = next_ids[:, None]
    sequences = torch.cat([prompt, torch.stack(tokens, dim=1)], dim=1)
    return GenerationOutput(sequences, scores, torch.stack(all_logits, dim=1))


def greedy(
    stepper: Stepper,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> GenerationOutput:
    """Greedy decoding: at each step the most probable token, ``argmax p(w | w_<t, image)``.

    Args:
        stepper: the model (see :class:`Stepper`).
        prompt: ``(B, L0)`` long, the tokens to start from (e.g. ``[BOS]``).
        max_new_tokens: at most this many tokens are generated.
        eos_id: the end token, or None to always generate ``max_new_tokens`` tokens.
        pad_id: what follows the end token in a finished sequence.
    """
    return _decode(stepper, prompt, max_new_tokens, lambda z: z.argmax(dim=-1), eos_id, pad_id)


def sample(
    stepper: Stepper,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> GenerationOutput:
    """Sampling from ``softmax(logits / temperature)``, restricted to the ``top_k`` best tokens.

    ``top_k=1`` is greedy decoding; a low temperature approaches it, a high one
    approaches uniform sampling. Other arguments as in :func:`greedy`.
    """
    check_positive("temperature", temperature)
    if top_k is not None:
        check_positive_int("top_k", top_k)

    def choose(logits: torch.Tensor) -> torch.Tensor:
        scaled = logits.float() / temperature
        if top_k is not None and top_k < scaled.shape[-1]:
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return _decode(stepper, prompt, max_new_tokens, choose, eos_id, pad_id)


def beam_search(
    stepper: Stepper,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> GenerationOutput:
    """Beam search: keep the ``beam_size`` most probable partial sequences at every step.

    Each beam is extended by every token; of the ``beam_size * vocab_size`` candidates
    the ``beam_size`` with the highest summed log-probability survive. A finished beam
    (it produced ``eos_id``) can only be extended by ``pad_id`` at no cost, and keeps
    its slot. At the end the beam with the best ``score / length ** length_penalty``
    is returned (``length`` = generated tokens up to and including EOS).
    ``beam_size=1`` is greedy decoding.
    """
    _check_prompt(prompt)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("beam_size", beam_size)
    _check_ids(eos_id, pad_id)
    batch, k, device = prompt.shape[0], beam_size, prompt.device
    stepper.reorder(torch.arange(batch, device=device).repeat_interleave(k))
    seqs = prompt.repeat_interleave(k, dim=0)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    scores = scores.flatten()
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    feed = seqs
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(stepper.step(feed).float(), dim=-1)
        logp[finished] = float("-inf")
        logp[finished, pad_id] = 0.0
        vocab = logp.shape[-1]
        top, flat = (scores[:, None] + logp).view(batch, k * vocab).topk(k, dim=-1)
        rows = (torch.arange(batch, device=device)[:, None] * k + flat // vocab).flatten()
        next_ids = (flat % vocab).flatten()
        stepper.reorder(rows)
        seqs = torch.cat([seqs[rows], next_ids[:, None]], dim=1)
        scores, finished, lengths = top.flatten(), finished[rows], lengths[rows] + ~finished[rows]
        if eos_id is not None:
            finished = finished | (next_ids == eos_id)
        if finished.all():
            break
        feed = next_ids[:, None]
    normalised = (scores / lengths.clamp(min=1) ** length_penalty).view(batch, k)
    best = torch.arange(batch, device=device) * k + normalised.argmax(dim=-1)
    return GenerationOutput(seqs[best], normalised.flatten()[best])


STRATEGIES = {"greedy": greedy, "beam": beam_search, "sample": sample}


def generate(
    stepper: Stepper,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    method: str = "greedy",
    **options: object,
) -> GenerationOutput:
    """Decode with ``method`` in ``"greedy"``, ``"beam"`` or ``"sample"`` (options passed on)."""
    if method not in STRATEGIES:
        raise ValueError(f"method must be one of {sorted(STRATEGIES)}, got {method!r}")
    return STRATEGIES[method](stepper, prompt, max_new_tokens, **options)
