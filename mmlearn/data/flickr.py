"""A loader for Flickr30K in Karpathy's split file (``dataset_flickr30k.json``).

Flickr30K (Young et al., 2014) has 31,783 photos with five English captions
each. Retrieval papers (CLIP among them) report results on the split that
Karpathy & Fei-Fei (2015) published as one JSON file: 29,000 train, 1,014
val and 1,000 test images::

    {"images": [{"filename": "1000092795.jpg", "split": "train", "imgid": 0,
                 "sentences": [{"raw": "Two young guys ...", "tokens": ["two", ...],
                                "imgid": 0, "sentid": 0}, ...],
                 "sentids": [0, 1, 2, 3, 4]}, ...],
     "dataset": "flickr30k"}

Karpathy's ``dataset_coco.json`` has the same layout plus a ``filepath``
field (``"train2014"``/``"val2014"``) and a ``"restval"`` split;
:func:`load_flickr30k` reads it too.
"""

from __future__ import annotations

from pathlib import Path

from mmlearn.data.coco import CaptionRecord, _read_json_object, _require

__all__ = ["KARPATHY_SPLITS", "load_flickr30k"]

KARPATHY_SPLITS = ("train", "val", "test", "restval")


def load_flickr30k(
    json_path: str | Path, image_dir: str | Path, split: str = "test"
) -> list[CaptionRecord]:
    """Read the images of one ``split`` of a Karpathy split file, with their raw captions.

    Args:
        json_path: ``dataset_flickr30k.json`` (or ``dataset_coco.json``).
        image_dir: the folder of the images (``flickr30k-images/``); a record's
            path is ``image_dir / filepath / filename``, ``filepath`` being
            empty for Flickr30K.
        split: ``"train"``, ``"val"``, ``"test"`` (or ``"restval"`` for COCO).

    Returns:
        Records in file order; ``image_id`` is the file's ``imgid`` (the
        filename when there is none); captions are the sentences' ``raw`` text.
    """
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"split must be one of {KARPATHY_SPLITS}, got {split!r}")
    document = _read_json_object(json_path, ("images",), "json_path")
    folder = Path(image_dir)
    records = []
    for index, image in enumerate(document["images"]):
        _require(image, ("filename", "split", "sentences"), "json_path", f"images[{index}]")
        if image["split"] != split:
            continue
        captions = []
        for number, sentence in enumerate(image["sentences"]):
            _require(sentence, ("raw",), "json_path", f"images[{index}].sentences[{number}]")
            captions.append(sentence["raw"].strip())
        path = folder / image.get("filepath", "") / image["filename"]
        records.append(CaptionRecord(path, tuple(captions), image.get("imgid", image["filename"])))
    return records
