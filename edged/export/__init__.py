"""Export of a merged (dense-with-zeros) model: ONNX and torch.export, each with a 2:4 pattern check."""
