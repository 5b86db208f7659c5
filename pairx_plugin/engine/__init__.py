"""The host-agnostic PAIR-X engine (tensors in, numpy results out)."""

from .engine import PairX
from .layers import LayerInfo, default_layer_key, list_layers, resolve_layers
from .results import LayerExplanation, Match, PairExplanation, PairMetrics

__all__ = [
    "LayerExplanation",
    "LayerInfo",
    "Match",
    "PairExplanation",
    "PairMetrics",
    "PairX",
    "default_layer_key",
    "list_layers",
    "resolve_layers",
]
