"""mmlearn: the small PyTorch package behind 《多模态大模型：技术原理与实战》.

Every formula of the book lives in :mod:`mmlearn.functional`; modules built on
those formulas live in :mod:`mmlearn.nn`. See ``mmlearn.formulas`` for the map
from the book's equation labels to the functions that implement them.
"""

from mmlearn import generation
from mmlearn.utils import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["generation", "get_device", "seed_everything", "__version__"]
