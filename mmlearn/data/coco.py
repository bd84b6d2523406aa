"""A loader for MS COCO captions, and the image-caption records all caption loaders return.

MS COCO (Lin et al., 2014; Chen et al., 2015 for the captions) ships one
captions file per split, ``annotations/captions_<split>.json``::

    {"images": [{"id": 397133, "file_name": "000000397133.jpg", "height": ..., ...}, ...],
     "annotations": [{"image_id": 397133, "id": 370509, "caption": "A man is in a kitchen ..."},
                     ...]}

and the images in a folder per split (``val2017/000000397133.jpg``). Each
image has about five captions. :func:`load_coco_captions` turns one file into
a list of :class:`CaptionRecord`; images are read only when asked
(:func:`load_image`, :class:`ImageCaptionDataset`), so a split of 118,000
images loads in a second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mmlearn._checks import check_positive_int

__all__ = [
    "CaptionRecord",
    "ImageCaptionDataset",
    "flatten_captions",
    "load_coco_captions",
    "load_image",
]


@dataclass(frozen=True)
class CaptionRecord:
    """One image and its captions: ``image_path``, ``captions`` and the data set's ``image_id``."""

    image_path: Path
    captions: tuple[str, ...]
    image_id: int | str


def _read_json_object(path: str | Path, keys: Sequence[str], argument: str) -> dict:
    """Read ``path`` and check that it is a JSON object with a list under each of ``keys``."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    for key in keys:
        if not isinstance(document, dict) or not isinstance(document.get(key), list):
            raise ValueError(f"{argument} must be a JSON object with a list under {key!r}: {path}")
    return document


def _require(entry: object, fields: Sequence[str], argument: str, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{argument}: {where} must be a JSON object, got {entry!r}")
    missing = [field for field in fields if field not in entry]
    if missing:
        raise ValueError(f"{argument}: {where} lacks the field(s) {missing}")


def load_coco_captions(annotations_path: str | Path, image_dir: str | Path) -> list[CaptionRecord]:
    """Read a COCO ``captions_<split>.json`` file into one record per captioned image.

    Args:
        annotations_path: the captions file of one split.
        image_dir: the folder holding that split's images (``file_name`` is relative to it).

    Returns:
        Records sorted by image id; each image's captions in annotation-id order,
        stripped of surrounding white space. Images without any caption are left out.
    """
    document = _read_json_object(annotations_path, ("images", "annotations"), "annotations_path")
    files = {}
    for index, image in enumerate(document["images"]):
        _require(image, ("id", "file_name"), "annotations_path", f"images[{index}]")
        files[image["id"]] = image["file_name"]
    captions: dict[int, list[tuple[int, str]]] = {}
    for index, note in enumerate(document["annotations"]):
        _require(note, ("image_id", "id", "caption"), "annotations_path", f"annotations[{index}]")
        if note["image_id"] not in files:
            raise ValueError(
                f"annotations_path: annotations[{index}] refers to image_id "
                f"{note['image_id']!r}, which is not in 'images'"
            )
        captions.setdefault(note["image_id"], []).append((note["id"], note["caption"].strip()))
    folder = Path(image_dir)
    return [
        CaptionRecord(
            folder / files[image_id],
            tuple(text for _, text in sorted(captions[image_id])),
            image_id,
        )
        for image_id in sorted(captions)
    ]


def load_image(path: str | Path, image_size: int | None = None) -> torch.Tensor:
    """Read an image file as an RGB float tensor ``(3, H, W)`` in [0, 1].

    ``image_size`` resizes it to ``image_size x image_size`` (bicubic), as the
    square inputs of CLIP-style image towers need.
    """
    from PIL import Image

    if image_size is not None:
        check_positive_int("image_size", image_size)
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image_size is not None:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def flatten_captions(records: Sequence[CaptionRecord]) -> tuple[list[str], torch.Tensor]:
    """All captions in one list, and ``text_to_image``: the index of each caption's record.

    This is the input :func:`mmlearn.metrics.recall_at_k` needs: a similarity
    matrix ``(len(records), len(texts))`` and ``text_to_image``.
    """
    texts, owners = [], []
    for index, record in enumerate(records):
        texts.extend(record.captions)
        owners.extend([index] * len(record.captions))
    return texts, torch.tensor(owners, dtype=torch.long)


class ImageCaptionDataset(Dataset):
    """Item ``i`` is ``(image (3, S, S), caption)`` for record ``i``, the image read lazily.

    Args:
        records: from :func:`load_coco_captions` or :func:`mmlearn.data.flickr.load_flickr30k`.
        image_size: the side S the images are resized to.
        random_caption: pick one of the image's captions at random on each
            access (with PyTorch's generator, so ``torch.manual_seed`` repeats
            it), as CLIP-style training does; otherwise always the first.
    """

    def __init__(
        self, records: Sequence[CaptionRecord], image_size: int = 224, random_caption: bool = False
    ):
        if any(not isinstance(r, CaptionRecord) or not r.captions for r in records):
            raise ValueError("records must be CaptionRecords with at least one caption each")
        check_positive_int("image_size", image_size)
        self.records = list(records)
        self.image_size = image_size
        self.random_caption = random_caption

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        record = self.records[index]
        choice = 0
        if self.random_caption:
            choice = int(torch.randint(len(record.captions), ()).item())
        return load_image(record.image_path, self.image_size), record.captions[choice]
