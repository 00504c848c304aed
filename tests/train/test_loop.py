"""The training loop's loss: labels, or labels and a teacher's softened outputs."""

import torch
import torch.nn.functional as F

from edged.train.loop import distill_loss


def test_distillation_loss_mixes_labels_and_the_teachers_softened_outputs():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(distill_loss(logits, labels, 0.5, 2.0), ce)  # no teacher: labels only
    same = distill_loss(logits, {"y": labels, "teacher": logits.clone()}, 0.5, 2.0)
    assert torch.allclose(same, 0.5 * ce, atol=1e-6)  # a student equal to its teacher pays no KL
    other = distill_loss(logits, {"y": labels, "teacher": torch.randn(8, 5)}, 0.5, 2.0)
    assert other > same
    assert torch.allclose(distill_loss(logits, {"y": labels, "teacher": torch.randn(8, 5)}, 0.0, 2.0), ce)
