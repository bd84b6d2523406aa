"""Retrieval Recall@K, zero-shot classification, and the embedding plots."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlearn.metrics import (
    recall_at_k,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_predict,
)
from mmlearn.viz import plot_embeddings_2d, plot_similarity_matrix, project_2d

# ----------------------------------------------------------------------------------------
# Recall@K
# ----------------------------------------------------------------------------------------


def ref_recall(similarity: torch.Tensor, text_to_image: list[int], k: int) -> tuple[float, float]:
    """Recall@K by sorting, one query at a time (ties broken against the query)."""
    n_img, n_txt = similarity.shape
    image_hits = 0
    for i in range(n_img):
        mine = {j for j in range(n_txt) if text_to_image[j] == i}
        # wrong texts first among equals: sort by (-score, is_correct)
        order = sorted(range(n_txt), key=lambda j: (-float(similarity[i, j]), j in mine))
        image_hits += any(j in mine for j in order[:k])
    text_hits = 0
    for j in range(n_txt):
        order = sorted(
            range(n_img), key=lambda i: (-float(similarity[i, j]), i == text_to_image[j])
        )
        text_hits += text_to_image[j] in order[:k]
    return image_hits / n_img, text_hits / n_txt


def test_identity_gives_perfect_recall():
    result = recall_at_k(torch.eye(6), torch.arange(6), ks=(1, 5))
    assert result == {"image_to_text": {1: 1.0, 5: 1.0}, "text_to_image": {1: 1.0, 5: 1.0}}


def test_ground_truth_at_rank_i_gives_recall_k_over_n():
    # Image i's caption is the (i+1)-th best text for it, and vice versa: R@k = k / N.
    n = 10
    similarity = torch.empty(n, n)
    for i in range(n):
        order = [j for j in range(n) if j != i]
        ranking = order[:i] + [i] + order[i:]  # caption i sits at position i
        for position, j in enumerate(ranking):
            similarity[i, j] = float(n - position)
    assert similarity[3].argsort(descending=True).tolist().index(3) == 3
    result = recall_at_k(similarity, torch.arange(n), ks=(1, 2, 5, 10))
    assert result["image_to_text"] == {k: k / n for k in (1, 2, 5, 10)}


def test_any_caption_in_the_top_k_counts_for_the_image():
    # 2 images, 3 captions each; image 0's best caption comes 3rd, after two of image 1's.
    text_to_image = torch.tensor([0, 0, 0, 1, 1, 1])
    similarity = torch.tensor([[0.1, 0.2, 0.7, 0.9, 0.8, 0.3], [0.0, 0.1, 0.2, 0.3, 0.9, 0.4]])
    result = recall_at_k(similarity, text_to_image, ks=(1, 2, 3))
    assert result["image_to_text"] == {1: 0.5, 2: 0.5, 3: 1.0}
    # text -> image: only text 3 prefers the wrong image (0.9 for image 0 against 0.3)
    expected_t2i = [ref_recall(similarity, text_to_image.tolist(), k)[1] for k in (1, 2, 3)]
    assert list(result["text_to_image"].values()) == pytest.approx(expected_t2i)
    assert result["text_to_image"][1] == pytest.approx(5 / 6)


def test_ties_count_against_the_query():
    result = recall_at_k(torch.zeros(4, 4), torch.arange(4), ks=(1, 3, 4))
    assert result["image_to_text"] == {1: 0.0, 3: 0.0, 4: 1.0}


@settings(max_examples=40, deadline=None)
@given(
    n_img=st.integers(1, 6),
    captions=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    k=st.integers(1, 8),
)
def test_recall_matches_sorting_reference(n_img, captions, seed, k):
    generator = torch.Generator().manual_seed(seed)
    text_to_image = torch.arange(n_img).repeat_interleave(captions)
    # few distinct values, so that ties happen
    similarity = torch.randint(0, 4, (n_img, len(text_to_image)), generator=generator).float()
    result = recall_at_k(similarity, text_to_image, ks=(k,))
    expected = ref_recall(similarity, text_to_image.tolist(), k)
    assert (result["image_to_text"][k], result["text_to_image"][k]) == pytest.approx(expected)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_recall_does_not_depend_on_the_logit_scale(scale, seed):
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.randn(5, 10, generator=generator, dtype=torch.float64)
    text_to_image = torch.arange(5).repeat(2)
    assert recall_at_k(similarity * scale, text_to_image) == recall_at_k(similarity, text_to_image)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: recall_at_k(torch.eye(3)[0], torch.arange(3)), ValueError, "similarity"),
        (lambda: recall_at_k(torch.eye(3).long(), torch.arange(3)), TypeError, "similarity"),
        (lambda: recall_at_k(torch.zeros(0, 3), torch.arange(3)), ValueError, "similarity"),
        (lambda: recall_at_k(torch.eye(3), torch.arange(4)), ValueError, "text_to_image"),
        (lambda: recall_at_k(torch.eye(3), torch.tensor([0, 1, 3])), ValueError, "text_to_image"),
        (
            lambda: recall_at_k(torch.eye(3), torch.tensor([0.0, 1.0, 2.0])),
            TypeError,
            "text_to_image",
        ),
        (lambda: recall_at_k(torch.eye(3), torch.tensor([0, 1, 1])), ValueError, "text_to_image"),
        (lambda: recall_at_k(torch.eye(3), torch.arange(3), ks=(0,)), ValueError, "ks"),
        (lambda: recall_at_k(torch.eye(3), torch.arange(3), ks=()), ValueError, "ks"),
        (lambda: recall_at_k(torch.eye(3), torch.arange(3), ks=(1.5,)), ValueError, "ks"),
    ],
)
def test_recall_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------
# Zero-shot classification
# ----------------------------------------------------------------------------------------

VECTORS = {
    "a cat": [1.0, 0.0, 0.0],
    "a kitten": [3.0, 1.0, 0.0],
    "a dog": [0.0, 1.0, 0.0],
    "a puppy": [0.0, 2.0, 2.0],
}


def _encoder(texts: list[str]) -> torch.Tensor:
    return torch.tensor([VECTORS[t] for t in texts], dtype=torch.float64)


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts():
    classes = zero_shot_classifier(_encoder, [["a cat", "a kitten"], ["a dog", "a puppy"]])
    cat = F.normalize(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), dim=0) + F.normalize(
        torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64), dim=0
    )
    dog = (
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        + torch.tensor([0.0, 2.0, 2.0], dtype=torch.float64) / 8**0.5
    )
    torch.testing.assert_close(classes, F.normalize(torch.stack([cat, dog]) / 2, dim=1))
    # the raw (unnormalised) mean would point elsewhere: the length of "a kitten" does not count
    raw = F.normalize(torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 2.0]], dtype=torch.float64), dim=1)
    assert not torch.allclose(classes, raw)


def test_zero_shot_prediction_and_accuracy():
    classes = torch.eye(3, dtype=torch.float64)
    images = torch.tensor(
        [[5.0, 1.0, 0.0], [0.1, 0.0, 0.2], [0.0, 9.0, 8.0], [1.0, 0.0, 0.9]], dtype=torch.float64
    )
    assert zero_shot_predict(images, classes).tolist() == [0, 2, 1, 0]
    labels = torch.tensor([0, 2, 2, 0])
    assert zero_shot_accuracy(images, classes, labels) == pytest.approx(0.75)
    # independent of any positive scale of the image features (and of the logit scale)
    assert zero_shot_accuracy(images * 100, classes, labels) == pytest.approx(0.75)


def test_zero_shot_bad_inputs():
    with pytest.raises(TypeError, match="text_encoder_fn"):
        zero_shot_classifier("not a function", [["a cat"]])
    with pytest.raises(ValueError, match="class_prompts"):
        zero_shot_classifier(_encoder, [])
    with pytest.raises(ValueError, match=r"class_prompts\[1\]"):
        zero_shot_classifier(_encoder, [["a cat"], []])
    with pytest.raises(ValueError, match="class_prompts"):
        zero_shot_classifier(_encoder, "a cat")
    with pytest.raises(ValueError, match="text_encoder_fn"):
        zero_shot_classifier(lambda texts: torch.zeros(1, 3), [["a cat", "a dog"]])
    classes = torch.eye(3)
    with pytest.raises(ValueError, match="feature widths"):
        zero_shot_predict(torch.zeros(2, 4), classes)
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(torch.zeros(2, 3), classes, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(torch.zeros(2, 3), classes, torch.tensor([0]))
    with pytest.raises(TypeError, match="labels"):
        zero_shot_accuracy(torch.zeros(2, 3), classes, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="class_embeddings"):
        zero_shot_predict(torch.zeros(2, 3), torch.zeros(0, 3))


# ----------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------


def test_plot_similarity_matrix_draws_values_and_labels():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.4]])
    ax = plot_similarity_matrix(
        sim, row_labels=["a", "b", "c"], col_labels=["x", "y"], title="Similarity"
    )
    assert ax.get_title() == "Similarity"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    assert np.allclose(ax.images[0].get_array(), sim.numpy())
    assert "0.90" in [t.get_text() for t in ax.texts]
    big = plot_similarity_matrix(np.zeros((20, 20)))
    assert len(big.texts) == 0  # large matrices are not annotated
    with pytest.raises(ValueError, match="sim"):
        plot_similarity_matrix(torch.zeros(3))
    with pytest.raises(ValueError, match="row_labels"):
        plot_similarity_matrix(sim, row_labels=["a"])
    with pytest.raises(TypeError, match="sim"):
        plot_similarity_matrix([[1.0]])


def test_project_2d_separates_two_clusters():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 8, generator=generator) * 0.1
    features[20:] += 3.0
    for method in ("pca", "tsne"):
        points = project_2d(features, method)
        assert points.shape == (40, 2)
        first, second = points[:20].mean(axis=0), points[20:].mean(axis=0)
        spread = max(points[:20].std(axis=0).max(), points[20:].std(axis=0).max())
        assert np.linalg.norm(first - second) > 3 * spread


def test_plot_embeddings_2d_one_colour_per_label():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 5, generator=generator)
    labels = torch.arange(30) % 3
    _, ax = plt.subplots()
    returned = plot_embeddings_2d(
        features, labels, method="pca", ax=ax, label_names=["zero", "one", "two"]
    )
    assert returned is ax
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
    assert len(ax.collections) == 3
    with pytest.raises(ValueError, match="method"):
        plot_embeddings_2d(features, labels, method="umap")
    with pytest.raises(ValueError, match="labels"):
        plot_embeddings_2d(features, labels[:5])
    with pytest.raises(ValueError, match="label_names"):
        plot_embeddings_2d(features, labels, label_names=["zero"])
    with pytest.raises(ValueError, match="features"):
        plot_embeddings_2d(features[:2], labels[:2])
