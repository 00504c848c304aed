"""Block units across tasks: which blocks a mask uses, the nudge toward used blocks, and their union."""

from __future__ import annotations

import torch

from edged.sparse.blocks import BLOCK, aligned_scores, blocks_of, blocks_of_mask, count_blocks, union_blocks
from edged.sparse.masks import per_neuron_topk


def test_blocks_are_16_wide_row_segments_of_the_out_by_fan_in_view():
    mask = torch.zeros(4, 8, 3, 3, dtype=torch.bool)  # a conv: fan_in 72 -> 5 blocks per row (the last one short)
    mask[1, 0, 0, 0] = True  # row 1, column 0 -> block 0
    mask[2, 7, 2, 2] = True  # row 2, column 71 -> block 4
    blocks = blocks_of_mask(mask)
    assert blocks.shape == (4, 5) and blocks.sum() == 2 and blocks[1, 0] and blocks[2, 4]
    expected = torch.zeros(4, 5, dtype=torch.bool)
    for flat in mask.flatten().nonzero().flatten().tolist():  # brute force over the entries
        expected[flat // 72, (flat % 72) // BLOCK] = True
    assert torch.equal(blocks, expected)
    assert torch.equal(blocks_of(mask.shape, mask.flatten().nonzero().flatten()), blocks)


def test_aligned_scores_multiply_only_entries_in_used_blocks():
    score = torch.ones(2, 32)
    used = torch.tensor([[True, False], [False, False]])
    out = aligned_scores({"w": score}, {"w": used}, strength=0.5)["w"]
    assert torch.equal(out[0, :16], torch.full((16,), 1.5)) and torch.equal(out[0, 16:], torch.ones(16))
    assert torch.equal(out[1], torch.ones(32))
    assert aligned_scores({"w": score}, {"w": used}, strength=0.0)["w"] is score


def test_a_second_task_aligned_to_the_first_shares_its_blocks():
    first_scores = {"w": torch.rand(64, 256, generator=torch.Generator().manual_seed(0))}
    second_scores = {"w": torch.rand(64, 256, generator=torch.Generator().manual_seed(1))}
    first = {"w": blocks_of_mask(per_neuron_topk(first_scores, k=4)["w"])}
    unaligned = {"w": blocks_of_mask(per_neuron_topk(second_scores, k=4)["w"])}
    aligned = {"w": blocks_of_mask(per_neuron_topk(aligned_scores(second_scores, first, 1.0), k=4)["w"])}
    assert count_blocks(union_blocks([first, aligned])) < count_blocks(union_blocks([first, unaligned]))
    assert count_blocks(union_blocks([first, first])) == count_blocks(first)
