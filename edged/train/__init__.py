"""Training loop, schedules, evaluation, checkpoints of the trainable part."""
