"""The registry from the book's numbered equations to the code that implements them.

Every equation that the book labels (MyST ``$$ ... $$ (label)`` or a
``{math}`` directive with ``:label:``) appears here with the dotted path of
the function or class that computes it. ``tests/test_formulas.py`` reads the
book's sources and fails when a labelled equation has no entry here or an
entry names an equation the book no longer has. The appendix page
"公式与代码索引" is generated from this table.

Each chapter owns one block below; keep the blocks in book order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Formula:
    """One labelled equation of the book and where ``mmlearn`` implements it."""

    label: str
    section: str
    title: str
    implementation: str  # dotted path, e.g. "mmlearn.functional.attention"


FORMULAS: tuple[Formula, ...] = (
    # --- Chapter 2.2: the Transformer architecture --------------------------------------
    Formula(
        "eq-positional-encoding", "2.2.3", "正弦位置编码 PE(pos, i)", "mmlearn.nn.sinusoidal_table"
    ),
    # --- Chapter 3.1: multimodal Transformer, pretraining and decoding ----------------
    Formula("eq-itc-loss", "3.1.2", "图文对比损失 L_ITC", "mmlearn.functional.itc_loss"),
    Formula("eq-itm-loss", "3.1.2", "图文匹配损失 L_ITM", "mmlearn.functional.itm_loss"),
    Formula(
        "eq-itm-negatives",
        "3.1.2",
        "ITM 困难负样本的抽样分布",
        "mmlearn.functional.itm_hard_negatives",
    ),
    Formula("eq-lm-loss", "3.1.2", "以图像为条件的语言建模损失 L_LM", "mmlearn.functional.lm_loss"),
    Formula("eq-kv-cache", "3.1.3", "带键值缓存的第 t 步注意力", "mmlearn.nn.TransformerDecoder"),
    # --- Chapter 3.2: contrastive learning on real photos (3.2.2) ----------------------
    Formula(
        "eq-conse",
        "3.2.2",
        "ConSE：前 k 个类别的概率加权词向量",
        "mmlearn.functional.conse_embedding",
    ),
    Formula(
        "eq-grad-cam", "3.2.2", "Grad-CAM：梯度加权的卷积特征图", "mmlearn.functional.grad_cam"
    ),
    # --- Chapter 3.4: multimodal large models -------------------------------------------
    Formula("eq-rope", "3.4", "旋转位置编码 RoPE(x, p)", "mmlearn.functional.rotary_embedding"),
    # --- Chapter 4.1: the Transformer -------------------------------------------------
    Formula(
        "eq-attention", "4.1.1", "缩放点积注意力 Attention(Q, K, V)", "mmlearn.functional.attention"
    ),
    Formula(
        "eq-multihead",
        "4.1.2",
        "多头注意力 MultiHead(Q, K, V)",
        "mmlearn.functional.multi_head_attention",
    ),
    Formula("eq-head", "4.1.2", "第 i 个头 head_i", "mmlearn.functional.multi_head_attention"),
    Formula("eq-ffn", "4.1.3", "逐位置前馈网络 FFN(x)", "mmlearn.functional.feed_forward"),
    Formula(
        "eq-encoder-layer",
        "4.1.3",
        "编码器层：残差连接与层归一化（post-LN）",
        "mmlearn.nn.TransformerEncoderLayer",
    ),
    # --- Chapter 4.2: contrastive learning --------------------------------------------
    Formula(
        "eq-infonce", "4.2.1", "InfoNCE 损失 L_NCE(x, x+, {x-})", "mmlearn.functional.info_nce"
    ),
    Formula("eq-clip-loss", "4.2.1", "CLIP 的对称对比损失", "mmlearn.functional.clip_loss"),
    Formula("eq-nt-xent", "4.2.1", "SimCLR 的 NT-Xent 损失", "mmlearn.functional.nt_xent"),
    Formula(
        "eq-siglip-loss", "3.2", "SigLIP 的成对 sigmoid 损失", "mmlearn.functional.siglip_loss"
    ),
    Formula(
        "eq-cl-objective",
        "4.2.2",
        "对比学习目标函数 J_CL",
        "mmlearn.functional.contrastive_objective",
    ),
    # --- Chapter 4.3: knowledge distillation --------------------------------------------
    Formula(
        "eq-kd-soft", "4.3.1", "软目标蒸馏 L_KD(y_s, y_t)", "mmlearn.functional.soft_target_loss"
    ),
    Formula(
        "eq-kd-hinton",
        "4.3.1",
        "Hinton 的蒸馏目标 α T² KL + (1 − α) CE",
        "mmlearn.functional.distillation_loss",
    ),
    Formula(
        "eq-attention-distillation",
        "4.3.2",
        "注意力蒸馏 L_AD(A_s, A_t)",
        "mmlearn.functional.attention_distillation_loss",
    ),
    # --- Chapter 8: trends and challenges ----------------------------------------------
    Formula(
        "eq-power-law", "8.1", "缩放定律的幂律形式 L(N) = a N^(-α)", "mmlearn.compute.fit_power_law"
    ),
    Formula("eq-training-flops", "8.2", "训练算力 C ≈ 6ND", "mmlearn.compute.training_flops"),
    Formula(
        "eq-training-time", "8.2", "训练时间 T = C / (n P u)", "mmlearn.compute.training_seconds"
    ),
)


def by_label() -> dict[str, Formula]:
    """Return the registry as a dict keyed by equation label."""
    return {formula.label: formula for formula in FORMULAS}


def resolve(label: str):
    """Return the function or class that implements the equation ``label``."""
    table = by_label()
    if label not in table:
        known = ", ".join(sorted(table))
        raise KeyError(f"no formula labelled {label!r}; known labels: {known}")
    module_name, _, attribute = table[label].implementation.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)
