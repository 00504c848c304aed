"""The training loop's loss: labels, or labels and a teacher's softened outputs."""

import torch
import torch.nn.functional as F

from edged.train.loop import TrainSettings, _loss


def test_distillation_loss_mixes_labels_and_the_teachers_softened_outputs():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    settings = TrainSettings(epochs=1, batch_size=8, lr=1e-3, head_lr=1e-3, distill_weight=0.5, distill_temperature=2.0)
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(_loss(logits, labels, settings), ce)  # no teacher: labels only
    same = _loss(logits, {"y": labels, "teacher": logits.clone()}, settings)
    assert torch.allclose(same, 0.5 * ce, atol=1e-6)  # a student equal to its teacher pays no KL
    other = _loss(logits, {"y": labels, "teacher": torch.randn(8, 5)}, settings)
    assert other > same
    labels_only = TrainSettings(epochs=1, batch_size=8, lr=1e-3, head_lr=1e-3, distill_weight=0.0)
    assert torch.allclose(_loss(logits, {"y": labels, "teacher": torch.randn(8, 5)}, labels_only), ce)
