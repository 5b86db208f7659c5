"""Autograd functions that carry LRP relevance through operations zennit has no module for.

Under an LRP backend the gradient flowing through the graph *is* the relevance, so each function's
forward computes the ordinary value and its backward applies the LRP rule for that operation.
Every backward returns a tensor (zeros where nothing flows), never None: zennit's hooks fail on None.
"""
from __future__ import annotations

import torch

STABILIZER = 1e-6


def stabilize(z: torch.Tensor, eps: float = STABILIZER) -> torch.Tensor:
    """z + eps·sign(z), with sign(0) taken as +1 (the same convention as zennit's stabiliser)."""
    return z + eps * (z >= 0).to(z.dtype) * 2 - eps


class SumRule(torch.autograd.Function):
    """a + b, relevance split by contribution: R_a = a·R/(a+b), R_b = b·R/(a+b)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a + b
        # the shares depend on the forward only: computed once, each backward is two products
        inverse = 1.0 / stabilize(total.detach())
        ctx.save_for_backward(a.detach() * inverse, b.detach() * inverse)
        return total

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        share_a, share_b = ctx.saved_tensors
        return relevance * share_a, relevance * share_b


class SignalOnlyGate(torch.autograd.Function):
    """x · gate with the gate treated as a constant: all relevance stays with the signal x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        ctx.gate_shape = gate.shape
        return x * gate

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return relevance, relevance.new_zeros(ctx.gate_shape)


class PowerMeanPoolRule(torch.autograd.Function):
    """GeM pooling (mean of x^p over space)^(1/p), relevance split by each position's share of x^p."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        powered = x.clamp(min=eps).pow(p)
        ctx.save_for_backward(powered)
        return powered.mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        (powered,) = ctx.saved_tensors
        share = powered / stabilize(powered.sum(dim=(-2, -1), keepdim=True))
        return share * relevance, None, None


class PassThrough(torch.autograd.Function):
    """``fn(x)`` forward, relevance passed unchanged backward (the LRP rule for activations and
    for a BatchNorm already merged into its convolution)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn) -> torch.Tensor:
        return fn(x.clone())  # clone: in-place activations must not touch a tensor the graph saved

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return relevance, None
