"""Modules built on :mod:`mmlearn.functional`."""

from mmlearn.nn.attention import MultiHeadAttention
from mmlearn.nn.captioner import CaptionDecoderLayer, ImageCaptioner
from mmlearn.nn.clip import CLIPModel, LiTModel, SmallConvEncoder, make_small_clip
from mmlearn.nn.decoder import DecoderLayer, DecoderOutput, KVCache, TransformerDecoder
from mmlearn.nn.feedforward import FeedForward
from mmlearn.nn.fusion import (
    FUSIONS,
    CrossAttentionBlock,
    FusionOutput,
    MultimodalTransformer,
    UnimodalBaseline,
)
from mmlearn.nn.lora import LoRALinear, add_lora, merge_lora
from mmlearn.nn.positional import PositionalEncoding, sinusoidal_table
from mmlearn.nn.text import TextTransformer
from mmlearn.nn.transformer import TransformerEncoder, TransformerEncoderLayer
from mmlearn.nn.vision import PatchEmbedding, VisionTransformer
from mmlearn.nn.vlm import (
    PROJECTORS,
    MLPProjector,
    QFormerProjector,
    VisionLanguageModel,
    VLMOutput,
    chat_loss,
    make_projector,
)
from mmlearn.nn.vlp import VisionLanguagePretrainer, append_eos

__all__ = [
    "PROJECTORS",
    "LoRALinear",
    "MLPProjector",
    "QFormerProjector",
    "VisionLanguageModel",
    "VLMOutput",
    "add_lora",
    "chat_loss",
    "make_projector",
    "merge_lora",
    "CaptionDecoderLayer",
    "ImageCaptioner",
    "CLIPModel",
    "DecoderLayer",
    "DecoderOutput",
    "KVCache",
    "TransformerDecoder",
    "LiTModel",
    "SmallConvEncoder",
    "make_small_clip",
    "FUSIONS",
    "CrossAttentionBlock",
    "FeedForward",
    "FusionOutput",
    "MultiHeadAttention",
    "MultimodalTransformer",
    "PatchEmbedding",
    "PositionalEncoding",
    "TextTransformer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "UnimodalBaseline",
    "VisionTransformer",
    "VisionLanguagePretrainer",
    "append_eos",
    "sinusoidal_table",
]
