"""The host-agnostic PAIR-X engine (tensors in, numpy results out)."""
from .engine import PairX
from .layers import LayerInfo, default_layer_key, list_layers, resolve_layers
from .results import LayerExplanation, Match, PairExplanation, PairMetrics

__all__ = ["PairX", "LayerInfo", "default_layer_key", "list_layers", "resolve_layers",
           "LayerExplanation", "Match", "PairExplanation", "PairMetrics"]
