import pytest
import torch

from edged.data.task import TaskData, batches, cloned, copy_into, layout_key, num_samples, take, to_device
from edged.errors import InvalidInput


def image_task(n_per_class=(5, 7, 3)) -> TaskData:
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return TaskData("image", images, labels, [f"c{c}" for c in range(len(n_per_class))])


def test_split_is_deterministic_stratified_and_disjoint():
    task = image_task()
    train, val = task.split(0.2, seed=3)
    again_train, again_val = task.split(0.2, seed=3)
    assert torch.equal(train.x, again_train.x) and torch.equal(val.y, again_val.y)
    ids = lambda t: set(t.x[:, 0, 0, 0].tolist())  # noqa: E731  (each image holds its own index)
    assert ids(train).isdisjoint(ids(val)) and len(ids(train) | ids(val)) == len(task)
    assert torch.bincount(val.y, minlength=3).tolist() == [1, 1, 1]  # round(0.2 n), at least one per class
    other_train, _ = task.split(0.2, seed=4)
    assert not torch.equal(other_train.x, train.x)


def test_split_keeps_a_training_sample_in_every_class():
    train, val = image_task((2, 2)).split(0.9)
    assert torch.bincount(train.y).tolist() == [1, 1] and torch.bincount(val.y).tolist() == [1, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_fraction_must_be_inside_zero_one(fraction):
    with pytest.raises(InvalidInput, match="val_fraction"):
        image_task().split(fraction)


def test_subset_of_text_keeps_strings_and_labels():
    task = TaskData("text", ["a", "b", "c", "d"], torch.tensor([0, 1, 0, 1]), ["x", "y"])
    sub = task.subset(torch.tensor([3, 0]))
    assert sub.x == ["d", "a"] and sub.y.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("kind", "x", "y", "classes", "words"),
    [
        ("image", torch.zeros(2, 1, 4, 4), torch.tensor([0, 1], dtype=torch.int32), ["a", "b"], "int64"),
        ("image", torch.zeros(3, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"], "3 samples but 2 labels"),
        ("image", torch.zeros(2, 1, 4, 4), torch.tensor([0, 0]), ["a"], "at least 2"),
        ("image", torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ["a", "b"], "labels must lie in [0, 1]"),
        ("image", torch.zeros(2, 1, 4, 4), torch.tensor([1, 1]), ["a", "b"], "same label"),
        ("image", torch.zeros(2, 2, 4, 4), torch.tensor([0, 1]), ["a", "b"], "C = 1 or 3"),
        ("tabular", torch.zeros(2, 3, 1), torch.tensor([0, 1]), ["a", "b"], "(N, features)"),
        ("tabular", torch.tensor([[0.0], [float("nan")]]), torch.tensor([0, 1]), ["a", "b"], "NaN or infinite"),
        ("text", ["a", 3], torch.tensor([0, 1]), ["a", "b"], "list of strings"),
        ("image", torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64), ["a", "b"], "empty"),
    ],
)
def test_invalid_datasets_are_rejected_with_a_reason(kind, x, y, classes, words):
    with pytest.raises(InvalidInput) as caught:
        TaskData(kind, x, y, classes)
    assert words in caught.value.message


def test_batches_cover_every_sample_once_and_shuffle_deterministically():
    inputs = {"input_ids": torch.arange(10).view(10, 1), "attention_mask": torch.ones(10, 1)}
    labels = torch.arange(10)
    plain = list(batches(inputs, labels, 4))
    assert [num_samples(b) for b, _ in plain] == [4, 4, 2]
    assert torch.cat([y for _, y in plain]).tolist() == list(range(10))
    first = [y.tolist() for _, y in batches(inputs, labels, 4, torch.Generator().manual_seed(0))]
    shuffled = batches(inputs, labels, 4, torch.Generator().manual_seed(0))
    second = [(b["input_ids"].flatten().tolist(), y.tolist()) for b, y in shuffled]
    assert first == [y for _, y in second] and all(ids == y for ids, y in second)  # inputs stay paired with labels
    assert sorted(sum(first, [])) == list(range(10)) and sum(first, []) != list(range(10))
    with pytest.raises(InvalidInput, match="batch_size"):
        next(batches(inputs, labels, 0))


def test_take_and_to_device_keep_structure():
    tensor = torch.arange(6).view(3, 2)
    assert take(tensor, slice(1, 3)).tolist() == [[2, 3], [4, 5]]
    moved = to_device({"a": tensor}, "cpu")
    assert set(moved) == {"a"} and num_samples(moved) == 3


def test_a_static_copy_takes_new_inputs_of_its_layout_in_place():
    text = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.zeros(2, 4, dtype=torch.long)}
    static = cloned(text)
    assert static["input_ids"].data_ptr() != text["input_ids"].data_ptr()
    assert layout_key(static) == layout_key({"attention_mask": text["attention_mask"], "input_ids": text["input_ids"]})
    pointers = {k: v.data_ptr() for k, v in static.items()}
    fresh = {k: torch.full_like(v, 7) for k, v in text.items()}
    copy_into(static, fresh)
    assert {k: v.data_ptr() for k, v in static.items()} == pointers
    assert all(bool((v == 7).all()) for v in static.values())


def test_layout_key_tells_shapes_dtypes_and_names_apart():
    images = torch.zeros(2, 3, 8, 8)
    assert layout_key(images) == layout_key(torch.ones(2, 3, 8, 8))
    assert layout_key(images) != layout_key(torch.zeros(1, 3, 8, 8))
    assert layout_key(images) != layout_key(images.half())
    assert layout_key({"a": images}) != layout_key({"b": images})
    static = cloned(images)
    copy_into(static, torch.ones_like(images))
    assert bool((static == 1).all()) and not bool((images == 1).any())
