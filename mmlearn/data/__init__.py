"""Embedded data sets (generated or shipped with packages) and real-format loaders."""

from mmlearn.data.coco import (
    CaptionRecord,
    ImageCaptionDataset,
    flatten_captions,
    load_coco_captions,
    load_image,
)
from mmlearn.data.digits import (
    DIGIT_WORDS_EN,
    DIGIT_WORDS_ZH,
    DigitsCaptionDataset,
    DigitsSplit,
    load_digits_captions,
    prompts_en,
    prompts_zh,
)
from mmlearn.data.flickr import load_flickr30k
from mmlearn.data.photos import PHOTOS, Photo, imagenet_classes, load_photo, load_photos
from mmlearn.data.sentiment import (
    SENTIMENTS,
    SentimentDataset,
    make_sentiment_dataset,
    make_sentiment_splits,
)
from mmlearn.data.shapes import (
    COLORS,
    SHAPES,
    QuestionDataset,
    Scene,
    ShapeObject,
    caption_en,
    caption_zh,
    color_queries,
    generate_scenes,
    make_question_dataset,
    make_question_splits,
)
from mmlearn.data.shapes_vqa import (
    ANSWERS,
    VQA_KINDS,
    ShapesVQADataset,
    make_shapes_vqa,
    make_shapes_vqa_splits,
)
from mmlearn.data.tables import load_table, table_names
from mmlearn.data.tokenizer import WordTokenizer, split_words
from mmlearn.data.vqa import (
    VQAExample,
    answer_vocabulary,
    coco_image_filename,
    load_vqa,
    normalize_answer,
    vqa_accuracy,
)

__all__ = [
    "PHOTOS",
    "Photo",
    "imagenet_classes",
    "load_photo",
    "load_photos",
    "DIGIT_WORDS_EN",
    "DIGIT_WORDS_ZH",
    "DigitsCaptionDataset",
    "DigitsSplit",
    "load_digits_captions",
    "prompts_en",
    "prompts_zh",
    "CaptionRecord",
    "ImageCaptionDataset",
    "flatten_captions",
    "load_coco_captions",
    "load_flickr30k",
    "load_image",
    "COLORS",
    "SHAPES",
    "QuestionDataset",
    "Scene",
    "ShapeObject",
    "caption_en",
    "caption_zh",
    "color_queries",
    "generate_scenes",
    "make_question_dataset",
    "make_question_splits",
    "SENTIMENTS",
    "SentimentDataset",
    "make_sentiment_dataset",
    "make_sentiment_splits",
    "ANSWERS",
    "VQA_KINDS",
    "ShapesVQADataset",
    "make_shapes_vqa",
    "make_shapes_vqa_splits",
    "load_table",
    "table_names",
    "WordTokenizer",
    "split_words",
    "VQAExample",
    "answer_vocabulary",
    "coco_image_filename",
    "load_vqa",
    "normalize_answer",
    "vqa_accuracy",
]
