"""Every formula of the book as a pure function (docs/DESIGN.md section 3.1).

The names and semantics are a fixed contract: the book, its exercises and the
tests refer to them. Row-vector convention (``x @ W``), as in the book.
Implementations live in one module per chapter and are re-exported here.
"""

from mmlearn.functional.contrastive import (
    clip_loss,
    contrastive_objective,
    info_nce,
    nt_xent,
    siglip_loss,
)
from mmlearn.functional.distillation import (
    attention_distillation_loss,
    distillation_loss,
    feature_distillation_loss,
    kd_kl_divergence,
    soft_target_loss,
    uniform_layer_map,
)
from mmlearn.functional.transformer import (
    attention,
    attention_weights,
    causal_mask,
    feed_forward,
    merge_heads,
    multi_head_attention,
    padding_mask,
    rotary_embedding,
    split_heads,
)
from mmlearn.functional.vision import conse_embedding, grad_cam
from mmlearn.functional.vlp import itc_loss, itm_hard_negatives, itm_loss, lm_loss

__all__ = [
    "clip_loss",
    "contrastive_objective",
    "info_nce",
    "nt_xent",
    "siglip_loss",
    "attention",
    "attention_weights",
    "causal_mask",
    "feed_forward",
    "merge_heads",
    "multi_head_attention",
    "padding_mask",
    "rotary_embedding",
    "split_heads",
    "attention_distillation_loss",
    "distillation_loss",
    "feature_distillation_loss",
    "kd_kl_divergence",
    "soft_target_loss",
    "uniform_layer_map",
    "conse_embedding",
    "grad_cam",
    "itc_loss",
    "itm_hard_negatives",
    "itm_loss",
    "lm_loss",
]
