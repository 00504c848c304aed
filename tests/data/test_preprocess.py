import pytest
import torch

from edged.data.preprocess import (
    CHUNK,
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_images,
    preprocess_tabular,
    tokenize_texts,
)
from edged.errors import InvalidInput

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def test_grayscale_uint8_becomes_normalised_three_channel_float():
    images = torch.full((2, 1, 28, 28), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    out = preprocess_images(images)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    expected = (0.2 - MEAN) / STD  # (1, 3, 1, 1)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-6)


def test_uint8_and_unit_float_inputs_agree():
    images = torch.randint(0, 256, (3, 3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(preprocess_images(images, 32), preprocess_images(images.double() / 255, 32), atol=1e-5)


def test_colour_channels_keep_their_order_and_size_is_kept_when_equal():
    images = torch.zeros(1, 3, 32, 32)
    images[:, 0] = 1.0  # pure red
    restored = unnormalise(preprocess_images(images, 32))
    assert torch.allclose(restored[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_downsampling_is_antialiased():
    checkerboard = ((torch.arange(64).view(-1, 1) + torch.arange(64)) % 2).float().view(1, 1, 64, 64)
    grey = unnormalise(preprocess_images(checkerboard, 16))
    assert torch.allclose(grey, torch.full_like(grey, 0.5), atol=0.02)  # without antialiasing it would alias


def test_chunked_conversion_matches_per_image_conversion():
    images = torch.randint(0, 256, (CHUNK + 3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = preprocess_images(images, 16)
    assert torch.equal(whole[-3:], preprocess_images(images[-3:], 16))
    assert torch.equal(whole[:2], preprocess_images(images[:2], 16))


@pytest.mark.parametrize(
    ("images", "size", "words"),
    [
        (torch.zeros(2, 28, 28, dtype=torch.uint8), 64, "(N, C, H, W)"),
        (torch.zeros(2, 2, 28, 28, dtype=torch.uint8), 64, "C = 1 or 3"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.int32), 64, "uint8 or floating point"),
        (torch.zeros(2, 1, 28, 28), 8, "image_size"),
        (torch.zeros(2, 1, 28, 28), 2048, "image_size"),
    ],
)
def test_bad_images_are_rejected(images, size, words):
    with pytest.raises(InvalidInput) as caught:
        preprocess_images(images, size)
    assert words in caught.value.message


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from edged.models.text import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


def test_texts_are_padded_to_the_longest_and_truncated(tokenizer):
    encoded = tokenize_texts(["one", "one two three", "x " * 300], tokenizer, max_length=10)
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert encoded["input_ids"].shape == (3, 10) and encoded["input_ids"].dtype == torch.int64
    assert encoded["attention_mask"].sum(dim=1).tolist() == [3, 5, 10]  # [CLS] ... [SEP]
    short = tokenize_texts(["one", "one two three"], tokenizer)
    assert short["input_ids"].shape == (2, 5)  # longest in the set, not max_length


def test_bad_token_settings_are_rejected(tokenizer):
    with pytest.raises(InvalidInput, match="max_length"):
        tokenize_texts(["a"], tokenizer, max_length=513)
    with pytest.raises(InvalidInput, match="no texts"):
        tokenize_texts([], tokenizer)


def test_tabular_features_become_float32():
    out = preprocess_tabular(torch.arange(6, dtype=torch.int64).view(2, 3))
    assert out.dtype == torch.float32 and out.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(InvalidInput, match="tabular"):
        preprocess_tabular(torch.zeros(2, 3, 4))
