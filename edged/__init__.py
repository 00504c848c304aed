"""edged: on-device sparse fine-tuning for NVIDIA Jetson boards."""

__version__ = "0.1.0"
