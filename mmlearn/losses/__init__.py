"""Module forms of the book's losses (``nn.Module`` wrappers of :mod:`mmlearn.functional`)."""

from mmlearn.losses.contrastive import ClipLoss, InfoNCELoss, NTXentLoss, SigLipLoss
from mmlearn.losses.distillation import (
    AttentionDistillationLoss,
    DistillationLoss,
    FeatureDistillationLoss,
    SoftTargetLoss,
)
from mmlearn.losses.vlp import ITCLoss, ITMLoss, LMLoss

__all__ = [
    "ClipLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SigLipLoss",
    "AttentionDistillationLoss",
    "DistillationLoss",
    "FeatureDistillationLoss",
    "SoftTargetLoss",
    "ITCLoss",
    "ITMLoss",
    "LMLoss",
]
