"""Real photographs that ship inside installed packages, and the ImageNet class names.

No download happens here: scikit-image, scikit-learn and matplotlib carry these
photos in their wheels (Colab preinstalls all three). :data:`PHOTOS` records, for
each photo, where it comes from and under which licence, and the caption and the
short zero-shot prompt this book wrote for it. :func:`imagenet_classes` reads the
1,000 ImageNet-1k class names shipped as package data (``imagenet_classes.txt``,
copied from torchvision).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTOS", "Photo", "imagenet_classes", "load_photo", "load_photos"]


@dataclass(frozen=True)
class Photo:
    """One shipped photograph: how to load it, its source and licence, and our caption."""

    name: str
    loader: str  # "<package>:<file inside the installed package>"
    source: str
    license: str
    caption: str
    prompt: str  # a short zero-shot prompt naming what the photo shows


PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut",
        "skimage:data/astronaut.png",
        "scikit-image; NASA Great Images (Eileen Collins)",
        "public domain",
        "a smiling astronaut in an orange spacesuit in front of a flag",
        "an astronaut",
    ),
    Photo(
        "coffee",
        "skimage:data/coffee.png",
        "scikit-image; photograph by Rachel Michetti",
        "CC0",
        "a cup of coffee on a red saucer with a spoon",
        "a cup of coffee",
    ),
    Photo(
        "chelsea",
        "skimage:data/chelsea.png",
        "scikit-image; photograph by Stefan van der Walt",
        "CC0",
        "a close-up of a tabby cat's face",
        "a cat",
    ),
    Photo(
        "rocket",
        "skimage:data/rocket.jpg",
        "scikit-image; SpaceX, launch of DSCOVR on Falcon 9",
        "public domain (CC0)",
        "a rocket standing on its launch pad at dusk",
        "a rocket",
    ),
    Photo(
        "camera",
        "skimage:data/camera.png",
        "scikit-image; photograph by Lav Varshney",
        "CC0",
        "a black and white photo of a man with a camera on a tripod",
        "a photographer",
    ),
    Photo(
        "motorcycle",
        "skimage:data/motorcycle_left.png",
        "scikit-image; Middlebury 2014 stereo data set (left view), Scharstein et al.",
        "distributed by scikit-image and Middlebury for research use; no licence stated",
        "a red motorcycle parked in a workshop",
        "a motorcycle",
    ),
    Photo(
        "china",
        "sklearn:datasets/images/china.jpg",
        "scikit-learn; photograph by danielbuechele on Flickr",
        "CC BY 2.0",
        "a Chinese temple with many curved roofs among trees",
        "a temple",
    ),
    Photo(
        "flower",
        "sklearn:datasets/images/flower.jpg",
        "scikit-learn; photograph by vultilion on Flickr",
        "CC BY 2.0",
        "an orange flower in close-up",
        "a flower",
    ),
    Photo(
        "grace_hopper",
        "matplotlib:mpl-data/sample_data/grace_hopper.jpg",
        "matplotlib sample data; U.S. Navy official portrait of Grace Hopper",
        "public domain (U.S. government work)",
        "a portrait of an elderly woman in a navy uniform and cap",
        "a naval officer",
    ),
    Photo(
        "hubble",
        "skimage:data/hubble_deep_field.jpg",
        "scikit-image; NASA/ESA Hubble eXtreme Deep Field (HubbleSite)",
        "public domain (NASA)",
        "thousands of distant galaxies in a dark sky",
        "galaxies in deep space",
    ),
)


def _package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed; it ships the photo {relative}")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _read(loader: str) -> np.ndarray:
    """Read one photo file from the package that ships it (no network, no heavy imports).

    These are the files behind ``skimage.data.astronaut()``, ``skimage.data.camera()``,
    ``skimage.data.stereo_motorcycle()[0]``, ``sklearn.datasets.load_sample_image(...)``
    and ``matplotlib.cbook.get_sample_data(...)``; reading them with Pillow avoids
    importing those libraries (seconds on a slow machine).
    """
    package, _, relative = loader.partition(":")
    with Image.open(_package_file(package, relative)) as image:
        return np.asarray(image)


def load_photo(name: str) -> np.ndarray:
    """One photo of :data:`PHOTOS` as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale photos (scikit-image's ``camera``) are converted explicitly by
    repeating the gray channel three times, so that every photo has the shape
    an RGB model expects.
    """
    by_name = {photo.name: photo for photo in PHOTOS}
    if name not in by_name:
        raise ValueError(f"name must be one of {sorted(by_name)}, got {name!r}")
    image = np.asarray(_read(by_name[name].loader))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # grayscale -> RGB, explicitly
    if image.dtype != np.uint8:
        raise TypeError(f"photo {name!r} has dtype {image.dtype}, expected uint8")
    return np.array(image[:, :, :3])  # a writable copy (Pillow's arrays are read-only)


def load_photos(names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Several photos of :data:`PHOTOS` (all by default), by name, in :data:`PHOTOS` order."""
    wanted = [photo.name for photo in PHOTOS] if names is None else list(names)
    return {name: load_photo(name) for name in wanted}


@cache
def _imagenet_classes() -> tuple[str, ...]:
    text = resources.files("mmlearn.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in class-index order ("tench", "goldfish", ...)."""
    return list(_imagenet_classes())
