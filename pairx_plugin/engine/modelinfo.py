"""Where and in what precision a model runs, read from its parameters (models carry no .device)."""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a parameterless model."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first parameter; float32 for a parameterless model."""
    for tensor in model.parameters():
        return tensor.dtype
    return torch.float32
