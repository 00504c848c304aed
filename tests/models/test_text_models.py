"""Text backbones: all-MiniLM-L6-v2 offline with mean pooling, and user transformers directories."""

import shutil

import pytest
import torch
from torch.nn import functional as F

from edged.data.task import TaskData
from edged.errors import InvalidInput
from edged.models import load_model
from edged.models.text import minilm_dir

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "Share prices fell sharply today.",
]


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm-l6", num_classes=5, seed=0)


def embed(loaded, texts):
    task = TaskData("text", texts, torch.arange(len(texts)) % 2, ["a", "b"])
    with torch.no_grad():
        return loaded.model.backbone(loaded.preprocess(task))  # (N, 384)


def test_minilm_loads_offline_without_pooler(minilm):
    assert minilm.model.head.in_features == 384
    assert minilm.model.backbone.encoder.pooler is None  # unused by mean pooling: not an adaptable layer
    assert minilm.info.params == 22_565_376


def test_mean_pooling_ignores_padding(minilm):
    alone = embed(minilm, SENTENCES[:1] * 2)  # two equal texts: no padding at all
    padded = embed(minilm, SENTENCES)  # the first sentence padded to the longest
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    inputs = minilm.preprocess(TaskData("text", SENTENCES, torch.tensor([0, 1, 0]), ["a", "b"]))
    extra = {k: F.pad(v, (0, 7)) for k, v in inputs.items()}  # 7 more [PAD] (id 0) tokens with mask 0
    with torch.no_grad():
        assert torch.allclose(minilm.model.backbone(extra), padded, atol=1e-5)


def test_embeddings_carry_meaning(minilm):
    features = F.normalize(embed(minilm, SENTENCES), dim=1)
    similar, unrelated = features[0] @ features[1], features[0] @ features[2]
    assert similar > unrelated + 0.3


@pytest.mark.slow  # importing sentence-transformers takes seconds
def test_matches_sentence_transformers_reference(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    expected = torch.from_numpy(reference.encode(SENTENCES))  # mean pooling then L2 normalisation
    assert torch.allclose(F.normalize(embed(minilm, SENTENCES), dim=1), expected, atol=1e-4)


def test_tokenization_pads_to_longest_and_truncates(minilm):
    task = TaskData("text", ["short", "word " * 500], torch.tensor([0, 1]), ["a", "b"])
    inputs = minilm.preprocess(task)
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape == (2, 128) and inputs["input_ids"].dtype == torch.int64
    assert inputs["attention_mask"][0].sum() == 3  # [CLS] short [SEP]


def test_max_length_is_bounded_by_the_model():
    with pytest.raises(InvalidInput, match=r"max_length must be an integer in \[2, 512\]"):
        load_model("minilm-l6", num_classes=2, max_length=1000)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A small random BERT saved as a user would: config + safetensors + the MiniLM tokenizer files."""
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, directory / name)
    return directory


def test_user_transformers_directory_loads_with_its_tokenizer(tiny_bert_dir):
    loaded = load_model(str(tiny_bert_dir), num_classes=3, max_length=16)
    assert loaded.info.kind == "text" and loaded.info.options == {"max_length": 16, "token_keep": 1.0, "token_layer": 1}
    assert loaded.model.head.in_features == 32
    task = TaskData("text", SENTENCES, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    inputs = loaded.preprocess(task)
    assert inputs["input_ids"].shape[1] <= 16
    with torch.no_grad():
        assert loaded.model(inputs).shape == (3, 3)


def test_directories_that_are_not_models_are_rejected(tmp_path, tiny_bert_dir):
    with pytest.raises(InvalidInput, match="no config.json"):
        load_model(str(tmp_path), num_classes=2)
    shutil.copy(tiny_bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(InvalidInput, match="no \\*.safetensors"):
        load_model(str(tmp_path), num_classes=2)
