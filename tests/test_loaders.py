"""COCO captions and Flickr30K (Karpathy split) loaders, on fixtures in the real formats.

The JSON fixtures under ``tests/fixtures/`` follow the real files field by field
(made-up captions, three and four images); the images are written here as
small JPEGs of one colour each, so that reading them back can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmlearn.data.coco import (
    CaptionRecord,
    ImageCaptionDataset,
    flatten_captions,
    load_coco_captions,
    load_image,
)
from mmlearn.data.flickr import load_flickr30k
from mmlearn.metrics import recall_at_k

FIXTURES = Path(__file__).parent / "fixtures"
COCO_JSON = FIXTURES / "coco" / "captions_val2017.json"
FLICKR_JSON = FIXTURES / "flickr30k" / "dataset_flickr30k.json"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def _write_jpeg(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


@pytest.fixture
def coco_images(tmp_path) -> Path:
    """The fixture's images as ``val2017/<file_name>``, each of its own colour."""
    document = json.loads(COCO_JSON.read_text(encoding="utf-8"))
    for image, colour in zip(document["images"], COLOURS, strict=False):
        _write_jpeg(
            tmp_path / "val2017" / image["file_name"], (image["width"], image["height"]), colour
        )
    return tmp_path / "val2017"


@pytest.fixture
def flickr_images(tmp_path) -> Path:
    document = json.loads(FLICKR_JSON.read_text(encoding="utf-8"))
    for image, colour in zip(document["images"], COLOURS, strict=True):
        _write_jpeg(tmp_path / "flickr30k-images" / image["filename"], (10, 8), colour)
    return tmp_path / "flickr30k-images"


def test_coco_records(coco_images):
    records = load_coco_captions(COCO_JSON, coco_images)
    assert [r.image_id for r in records] == [139, 285]  # image 632 has no caption
    assert records[0].image_path == coco_images / "000000000139.jpg"
    assert records[0].captions == (
        "A living room with chairs near a window.",
        "A room with a table and a television.",
    )  # by annotation id
    assert records[1].captions == (
        "A large bear sitting near some grass.",
        "A big brown bear standing in the grass.",
        "The brown bear looks at the camera.",
    )


def test_coco_images_are_read_lazily_and_correctly(coco_images):
    records = load_coco_captions(COCO_JSON, coco_images / "missing")  # no file is opened
    assert len(records) == 2
    records = load_coco_captions(COCO_JSON, coco_images)
    image = load_image(records[0].image_path)
    assert image.shape == (3, 12, 16) and image.dtype == torch.float32
    torch.testing.assert_close(
        image.mean(dim=(1, 2)), torch.tensor(COLOURS[0]) / 255.0, atol=0.02, rtol=0
    )
    assert load_image(records[1].image_path, image_size=8).shape == (3, 8, 8)


def test_flickr30k_splits(flickr_images):
    test = load_flickr30k(FLICKR_JSON, flickr_images, split="test")
    assert [r.image_id for r in test] == [1, 3]
    assert test[0].image_path == flickr_images / "1001773457.jpg"
    assert test[0].captions == ("Two dogs play on the road.", "A black dog and a white dog.")
    assert [r.image_id for r in load_flickr30k(FLICKR_JSON, flickr_images, "train")] == [0]
    assert [r.image_id for r in load_flickr30k(FLICKR_JSON, flickr_images, "val")] == [2]
    assert load_flickr30k(FLICKR_JSON, flickr_images, "restval") == []
    image = load_image(test[1].image_path)
    torch.testing.assert_close(
        image.mean(dim=(1, 2)), torch.tensor(COLOURS[3]) / 255.0, atol=0.02, rtol=0
    )


def test_karpathy_coco_file_with_filepath(tmp_path):
    document = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "COCO_val2014_000000391895.jpg",
                "imgid": 0,
                "split": "restval",
                "cocoid": 391895,
                "sentences": [
                    {
                        "tokens": ["a", "man"],
                        "raw": "A man with a red helmet.",
                        "imgid": 0,
                        "sentid": 0,
                    }
                ],
            }
        ],
        "dataset": "coco",
    }
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    records = load_flickr30k(path, tmp_path / "images", split="restval")
    assert records == [
        CaptionRecord(
            tmp_path / "images" / "val2014" / "COCO_val2014_000000391895.jpg",
            ("A man with a red helmet.",),
            0,
        )
    ]


def test_flatten_captions_feeds_recall_at_k(coco_images):
    records = load_coco_captions(COCO_JSON, coco_images)
    texts, text_to_image = flatten_captions(records)
    assert len(texts) == 5 and text_to_image.tolist() == [0, 0, 1, 1, 1]
    similarity = torch.tensor(
        [
            [1.0 if owner == i else 0.0 for owner in text_to_image.tolist()]
            for i in range(len(records))
        ]
    )
    assert recall_at_k(similarity, text_to_image, ks=(1,))["image_to_text"] == {1: 1.0}


def test_image_caption_dataset(coco_images):
    records = load_coco_captions(COCO_JSON, coco_images)
    dataset = ImageCaptionDataset(records, image_size=8)
    images, captions = next(iter(DataLoader(dataset, batch_size=2)))
    assert images.shape == (2, 3, 8, 8)
    assert list(captions) == [records[0].captions[0], records[1].captions[0]]
    randomised = ImageCaptionDataset(records, image_size=8, random_caption=True)
    torch.manual_seed(0)
    seen = {randomised[1][1] for _ in range(40)}
    assert seen == set(records[1].captions)


def test_loader_bad_inputs(tmp_path, coco_images):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="annotations_path"):
        load_coco_captions(broken, coco_images)
    broken.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"image_id": 2, "id": 1, "caption": "x"}],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="image_id"):
        load_coco_captions(broken, coco_images)
    broken.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="file_name"):
        load_coco_captions(broken, coco_images)
    with pytest.raises(ValueError, match="split"):
        load_flickr30k(FLICKR_JSON, tmp_path, split="dev")
    broken.write_text(
        json.dumps({"images": [{"filename": "a.jpg", "split": "test"}]}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="sentences"):
        load_flickr30k(broken, tmp_path)
    with pytest.raises(ValueError, match="json_path"):
        load_flickr30k(COCO_JSON, tmp_path)
    with pytest.raises(FileNotFoundError):
        load_coco_captions(tmp_path / "nope.json", coco_images)
    with pytest.raises(ValueError, match="image_size"):
        load_image(coco_images / "000000000139.jpg", image_size=0)
    with pytest.raises(ValueError, match="records"):
        ImageCaptionDataset([CaptionRecord(Path("a.jpg"), (), 1)])
