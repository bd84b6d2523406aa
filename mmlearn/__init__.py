"""mmlearn: the small PyTorch package behind 《多模态大模型：技术原理与实战》.

Every formula of the book lives in :mod:`mmlearn.functional`; modules built on
those formulas live in :mod:`mmlearn.nn`. See ``mmlearn.formulas`` for the map
from the book's equation labels to the functions that implement them.
"""

import torch

from mmlearn._compat import require

require(torch.__version__)

from mmlearn import generation  # noqa: E402
from mmlearn._checks import debug_enabled, set_debug  # noqa: E402 (after the version check)
from mmlearn.optim import clamp_logit_scales_, param_groups  # noqa: E402
from mmlearn.utils import get_device, seed_everything  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "clamp_logit_scales_",
    "debug_enabled",
    "generation",
    "get_device",
    "param_groups",
    "seed_everything",
    "set_debug",
    "__version__",
]
