"""zennit rule hooks that run each module's modified forward once per forward pass, not once per
backward pass.

zennit's ``BasicHook`` re-runs the module with modified parameters inside every backward call.
LRP rules are linear in the incoming relevance once the forward is fixed, so the modified outputs
(z⁺, z⁻, …) are the same for every seed back-projected through one forward: we build each term on
first use after a forward, keep its graph, and reuse it (``retain_graph``) for every further seed.
Results are identical; each extra seed costs only the transposed operations.

Rules written for this (see :mod:`.zennit_rules`) implement ``term_scales(module)`` returning
``{term: scale}`` (the gradient of term t is the incoming relevance times scale_t) for the terms
that contribute, building terms lazily through ``self.term(module, t)``; a term that is not needed
(no negative input, no dead unit) is never built. zennit's own rules keep their
``gradient_mapper`` and build all terms.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import torch
from torch import nn
from zennit.core import BasicHook, Hook, ParamMod

_T = TypeVar("_T")


class HookSession:
    """The state the cached rule hooks of one backend context share (nothing is process-global).

    * ``optimised``: False runs the straightforward path (modified forwards rebuilt in every
      backward, the ordinary backward of hooked modules computed, transposes over the whole map);
      tests compare the two.
    * a clock that increases with every hooked module's forward (orders the modules of a pass);
    * the hooks registered in this context, so caches above a layer can be freed;
    * the distinct rows of the coming forward (:meth:`declare_rows`): a top-k query's batch repeats
      the query image once per candidate, and per-forward constants need computing once per image.
    """

    def __init__(self, optimised: bool = True) -> None:
        self.optimised = optimised
        self._ticks = itertools.count()
        self.hooks: list[CachedForwardHook] = []
        self.rows: DistinctRows | None = None

    def declare_rows(self, representatives: Sequence[int] | None) -> None:
        """Row i of the next forward's batch is the same image as row ``representatives[i]``."""
        self.rows = DistinctRows.from_representatives(representatives) if self.optimised else None

    def attach(self, hooks: Iterable[object]) -> None:
        """Make ``hooks`` (those a zennit composite registered) report to this session."""
        for hook in hooks:
            if isinstance(hook, CachedForwardHook):
                hook.session = self
                self.hooks.append(hook)

    def clock(self) -> int:
        """The next tick of this session's clock."""
        return next(self._ticks)

    def release_after(self, tick: int) -> None:
        """Free the cached tensors of every hook whose module ran after ``tick``.

        Once relevance has reached the deepest explained layer, the modules above it are never
        needed again for this forward (back-projections start at the layer), so their inputs and
        modified forwards can go.
        """
        for hook in self.hooks:
            if hook.stored_tensors.get("tick", -1) > tick:
                hook.stored_tensors.clear()


class DistinctRows:
    """Which rows of a batch to compute a per-forward constant on, and how to spread it back.

    ``first[k]`` is the k-th distinct image's first row; ``spread[i]`` the position in ``first`` of
    row i's image, so ``values_on_first[spread]`` is the whole batch's value.
    """

    def __init__(self, first: list[int], spread: list[int]) -> None:
        self.first = torch.tensor(first, dtype=torch.long)
        self.spread = torch.tensor(spread, dtype=torch.long)
        self.size = len(spread)

    @classmethod
    def from_representatives(cls, representatives: Sequence[int] | None) -> DistinctRows | None:
        """None when every row is its own image (nothing to share) or nothing was declared."""
        if representatives is None:
            return None
        reps = [int(r) for r in representatives]
        if any(r < 0 or r >= len(reps) or reps[r] != r for r in reps):
            raise ValueError(f"row representatives must point at rows that represent themselves, got {reps}")
        first = sorted(set(reps))
        if len(first) == len(reps):
            return None
        position = {row: k for k, row in enumerate(first)}
        return cls(first, [position[r] for r in reps])

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The distinct images' rows of ``x`` (indexing keeps a channels-last layout; index_select would not)."""
        return x[self.first.to(x.device)]

    def spread_back(self, x: torch.Tensor) -> torch.Tensor:
        """A value computed on :meth:`take`'s rows, repeated to every row of the batch (layout kept)."""
        return x[self.spread.to(x.device)]


class _Bypass(torch.autograd.Function):
    """The module's output, whose backward skips the module's own (discarded) gradient.

    zennit replaces the gradient a rule-hooked module passes to its input with the rule's
    relevance, but autograd still computes the module's ordinary input gradient first (a full
    convolution backward per module and seed) and throws it away. Routing the output through this
    function makes that gradient a cheap zero tensor; zennit's hook then supplies the relevance.
    """

    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # ctx: Any as in torch's Function
        ctx.input_shape, ctx.input_dtype = inp.shape, inp.dtype
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # a broadcast zero (no memory written): zennit's hook replaces it with the relevance
        return grad.new_zeros((), dtype=ctx.input_dtype).expand(ctx.input_shape), None


class _ModifiedInput:
    """``modifier(original)`` computed only on the slice asked for (saves a full copy per term)."""

    def __init__(self, modifier: Callable[[torch.Tensor], torch.Tensor], original: torch.Tensor) -> None:
        self.modifier, self.original = modifier, original

    def __getitem__(self, index: tuple[slice, ...]) -> torch.Tensor:
        return self.modifier(self.original[index])


#: a term's modified input: a tensor, or (directly transposed terms) the modifier applied per slice
TermInput = torch.Tensor | _ModifiedInput
#: (modified input, modified output or None once no longer needed, modified weight or None) of one term
Term = tuple[TermInput, torch.Tensor | None, torch.Tensor | None]
#: (modified input, modified weight, gradient or None, scale or None) of a directly transposed term:
#: its gradient is the given one, or the incoming relevance times the scale
ConvTerm = tuple[TermInput, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class CachedForwardHook:
    """Mixin placed before ``BasicHook`` in the MRO of a rule class.

    ``session`` is set by the backend context that registered the hook (:meth:`HookSession.attach`);
    a hook used on its own gets a private optimised session.
    """

    # set by zennit's Hook / BasicHook, which follow this mixin in every rule's MRO
    stored_tensors: dict[str, Any]
    input_modifiers: Sequence[Callable[[torch.Tensor], torch.Tensor]]
    param_modifiers: Sequence[ParamMod | Callable[[torch.Tensor, str], torch.Tensor]]
    output_modifiers: Sequence[Callable[[torch.Tensor], torch.Tensor]]
    gradient_mapper: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor | Sequence[torch.Tensor | None]]

    @property
    def session(self) -> HookSession:
        found = self.__dict__.get("_session")
        if found is None:
            found = self.__dict__["_session"] = HookSession()
        return found

    @session.setter
    def session(self, value: HookSession) -> None:
        self.__dict__["_session"] = value

    def post_forward(self, module: nn.Module, input: tuple[Any, ...] | torch.Tensor, output: Any) -> Any:
        inp = input[0] if isinstance(input, tuple) else input
        if (
            self.session.optimised
            and isinstance(output, torch.Tensor)
            and isinstance(inp, torch.Tensor)
            and inp.requires_grad
        ):
            output = _Bypass.apply(inp, output.detach())
        # a mixin: zennit's Hook, which follows it in every rule's MRO, defines post_forward
        return super().post_forward(module, input, output)  # type: ignore[misc]

    #: a rule that reads the modified outputs of plain convolutions only to build per-forward constants
    #: (and spreads those back with :meth:`distinct_rows`) sets this: such outputs are then computed on
    #: the batch's distinct images only
    outputs_on_distinct_rows = False

    def forward(self, module: nn.Module, input: tuple[Any, ...], output: Any) -> None:
        self.stored_tensors.clear()
        self.stored_tensors["input"] = input
        self.stored_tensors["terms"] = {}
        self.stored_tensors["tick"] = self.session.clock()
        rows = self.session.rows
        inp = input[0] if isinstance(input, tuple) and input else None
        if rows is not None and isinstance(inp, torch.Tensor) and inp.shape[0] == rows.size:
            self.stored_tensors["rows"] = rows

    def distinct_rows(self, module: nn.Module) -> DistinctRows | None:
        """The distinct rows plain-convolution term outputs were computed on this forward (None: all rows)."""
        if not (self.outputs_on_distinct_rows and _is_plain_conv(module)):
            return None
        return cast("DistinctRows | None", self.stored_tensors.get("rows"))

    def term(self, module: nn.Module, t: int) -> Term:
        """(modified input, modified output, modified weight or None) of term ``t``.

        For plain ``Conv2d`` modules the weight is kept and no graph is built: their transposed
        operation is computed directly, on the box where the incoming relevance is non-zero. With
        :meth:`distinct_rows` set, their modified output covers only those rows.
        """
        terms = self.stored_tensors["terms"]
        if t not in terms:
            original = self.stored_tensors["input"][0].detach()
            direct = _is_plain_conv(module)
            modified_input = self.input_modifiers[t](original).requires_grad_(not direct)
            inp: TermInput = modified_input
            rows = self.distinct_rows(module)
            grad_mode = torch.no_grad() if direct else torch.enable_grad()
            with ParamMod.ensure(self.param_modifiers[t])(module) as modified, grad_mode:
                out = self.output_modifiers[t](
                    modified.forward(modified_input if rows is None else rows.take(modified_input))
                )
                weight: torch.Tensor | None = modified.weight.detach().clone() if direct else None
            # keep no modified copy: rebuild it on each box (on CUDA the whole map is used at once, and
            # rebuilding would read a value back to the host on every backward)
            if direct and inp is not original and not original.is_cuda:
                inp = _ModifiedInput(self.input_modifiers[t], original)
            terms[t] = (inp, out, weight)
        return cast(Term, terms[t])

    def first_row_output(self, module: nn.Module, t: int) -> torch.Tensor:
        """The modified output of term ``t`` for the batch's first row only, shape (1, ...).

        For a term whose modified input does not depend on the values (the flat rule's all-ones
        input) every row's output is the same, so one row is computed and broadcast by the caller.
        For a plain ``Conv2d`` the term is then cached without an output (the backward needs only its
        input and weight); other modules fall back to :meth:`term_output` on every row.
        """
        if not _is_plain_conv(module):
            return self.term_output(module, t)[:1]
        original = self.stored_tensors["input"][0].detach()
        with ParamMod.ensure(self.param_modifiers[t])(module) as modified, torch.no_grad():
            out = self.output_modifiers[t](modified.forward(self.input_modifiers[t](original[:1])))
            weight = modified.weight.detach().clone()
        terms = self.stored_tensors["terms"]
        if t not in terms:
            modifier = self.input_modifiers[t]
            inp: TermInput = modifier(original) if original.is_cuda else _ModifiedInput(modifier, original)
            terms[t] = (inp, None, weight)
        return out

    def term_output(self, module: nn.Module, t: int) -> torch.Tensor:
        """The modified output of term ``t`` (built on first use); asked for before a rule drops it."""
        out = self.term(module, t)[1]
        if out is None:
            raise RuntimeError(f"the modified output of term {t} was already released for this forward")
        return out

    def once(self, key: str, compute: Callable[[], _T]) -> _T:
        """A per-forward constant, computed on first use."""
        if key not in self.stored_tensors:
            self.stored_tensors[key] = compute()
        return cast(_T, self.stored_tensors[key])

    def backward(
        self, module: nn.Module, grad_input: tuple[torch.Tensor | None, ...], grad_output: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor | None, ...]:
        out_grad = grad_output[0]
        if not self.session.optimised:  # rebuild every per-forward quantity, as zennit's own hooks do
            for key in [k for k in self.stored_tensors if k not in ("input", "tick", "grad_output")]:
                del self.stored_tensors[key]
            self.stored_tensors["terms"] = {}
        # {term: (gradient, None) or (None, scale)}: the gradient of term t is given, or out_grad * scale
        scaled: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]
        if hasattr(self, "term_scales"):  # our rules: grad of term t = out_grad * scale_t
            scaled = {t: (None, scale) for t, scale in self.term_scales(module).items()}
        else:  # zennit's own rules: their gradient mapper on all terms
            outputs = [self.term_output(module, t) for t in range(len(self.input_modifiers))]
            mapped = self.gradient_mapper(out_grad, outputs)
            mapped = [mapped] if isinstance(mapped, torch.Tensor) else mapped
            scaled = {t: (g, None) for t, g in enumerate(mapped) if g is not None}
        relevance: torch.Tensor | None = None
        autograd_terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        direct_terms: list[ConvTerm] = []
        for t, (grad, scale) in scaled.items():
            inp, out, weight = self.term(module, t)
            if weight is not None:
                direct_terms.append((inp, weight, grad, scale))
            else:
                # only directly transposed terms (those that keep the weight) wrap the input or drop the output
                assert isinstance(inp, torch.Tensor) and out is not None
                grad = _term_gradient(grad, scale, out_grad)
                autograd_terms.append((inp, out, _like_layout(grad, out)))
        if direct_terms:
            # boxes need their bounds on the host: on CUDA the whole map is cheaper than a sync per image
            # only plain Conv2d modules keep their weight for a direct transpose (see term())
            relevance = boxed_conv_relevance(
                cast(nn.Conv2d, module),
                direct_terms,
                out_grad,
                self.stored_tensors["input"][0],
                boxed=self.session.optimised and not out_grad.is_cuda,
            )
        if autograd_terms:
            grads = torch.autograd.grad(
                [o for _, o, _ in autograd_terms],
                [i for i, _, _ in autograd_terms],
                grad_outputs=[g for _, _, g in autograd_terms],
                retain_graph=True,
                create_graph=out_grad.requires_grad,
            )
            for (inp, _, _), grad in zip(autograd_terms, grads):
                relevance = _accumulate(relevance, inp, grad)
        if relevance is None:
            relevance = torch.zeros_like(self.stored_tensors["input"][0])
        return tuple(
            relevance if original is not None and original.shape == relevance.shape else None for original in grad_input
        )


def boxed_conv_relevance(
    module: nn.Conv2d, terms: Sequence[ConvTerm], out_grad: torch.Tensor, like: torch.Tensor, boxed: bool = True
) -> torch.Tensor:
    """Σ_t input_t ⊙ convᵀ(grad_t, weight_t), computed per image on the box where out_grad is non-zero.

    A seed at one feature cell reaches only that cell's receptive field, so during a
    back-projection most of every map is zero (and a whole image is zero when only another image
    of the batch is being back-projected); computing on the non-zero box (plus the kernel's reach)
    gives the same numbers for a fraction of the work. ``terms`` holds ``(input_t, weight_t,
    grad_t, scale_t)`` with either the full grad or a scale (grad_t = out_grad · scale_t, then only
    multiplied on the box). The result has ``like``'s shape. ``boxed=False`` computes on the whole
    map (the straightforward path).
    """
    if not boxed:
        return _whole_conv_relevance(module, terms, out_grad, like)
    (sh, sw), (ph, pw) = module.stride, _numeric_padding(module)
    H, W = like.shape[-2:]
    relevance = torch.zeros_like(like)
    g_all = out_grad.detach()
    support = (g_all.amax(dim=1) != 0) | (g_all.amin(dim=1) != 0)  # (N, Ho, Wo); the fastest test on CPU
    for b in range(like.shape[0]):
        rows = support[b].any(dim=1).nonzero()
        if rows.numel() == 0:
            continue
        cols = support[b].any(dim=0).nonzero()
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        iy, ix = y0 * sh - ph, x0 * sw - pw  # input position of the transposed map's first row/col
        box = (slice(b, b + 1), slice(None), slice(y0, y1), slice(x0, x1))
        acc: torch.Tensor | None = None
        for inp, weight, grad, scale in terms:
            g = _term_gradient(grad, scale, out_grad, box)
            part = torch.nn.functional.conv_transpose2d(g, weight, stride=module.stride, groups=module.groups)
            if acc is None:  # clip the transposed map to the input once its size is known
                ty0, tx0 = max(0, -iy), max(0, -ix)
                ty1, tx1 = min(part.shape[-2], H - iy), min(part.shape[-1], W - ix)
                rows_in, cols_in = slice(iy + ty0, iy + ty1), slice(ix + tx0, ix + tx1)
            term = inp[b : b + 1, :, rows_in, cols_in] * part[..., ty0:ty1, tx0:tx1]
            acc = term if acc is None else acc + term
        assert acc is not None  # terms is never empty
        relevance[b : b + 1, :, rows_in, cols_in] = acc
    return relevance


def _whole_conv_relevance(
    module: nn.Conv2d, terms: Sequence[ConvTerm], out_grad: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """Σ_t input_t ⊙ convᵀ(grad_t, weight_t) over the whole batch at once: no value is read back to
    the host (what a GPU wants), and the straightforward path."""
    padding = _numeric_padding(module)
    (sh, sw), (ph, pw) = module.stride, padding
    kh, kw = module.kernel_size
    H, W = like.shape[-2:]
    Ho, Wo = out_grad.shape[-2:]
    extra = (H - ((Ho - 1) * sh - 2 * ph + kh), W - ((Wo - 1) * sw - 2 * pw + kw))
    whole = (slice(None),) * 4
    relevance: torch.Tensor | None = None
    for inp, weight, grad, scale in terms:
        g = _term_gradient(grad, scale, out_grad)
        part = torch.nn.functional.conv_transpose2d(
            g, weight, stride=module.stride, padding=padding, output_padding=extra, groups=module.groups
        )
        term = inp[whole] * part
        relevance = term if relevance is None else relevance + term
    assert relevance is not None
    return relevance


def _term_gradient(
    grad: torch.Tensor | None, scale: torch.Tensor | None, out_grad: torch.Tensor, box: tuple[slice, ...] | None = None
) -> torch.Tensor:
    """A term's gradient (on ``box``, else the whole map): the given one, or ``out_grad`` times the term's scale."""
    if grad is not None:
        return grad if box is None else grad[box]
    if scale is None:
        raise ValueError("a term's gradient needs either the gradient itself or a scale for the incoming one")
    return out_grad * scale if box is None else out_grad[box] * scale[box]


def _numeric_padding(module: nn.Conv2d) -> tuple[int, ...]:
    """The padding of a plain convolution, which is numeric (``_is_plain_conv`` excludes 'same' / 'valid')."""
    return cast("tuple[int, ...]", module.padding)


def _is_plain_conv(module: nn.Module) -> bool:
    """A Conv2d whose forward is torch's own (no dynamic 'same' padding), zero padding, dilation 1."""
    return (
        isinstance(module, torch.nn.Conv2d)
        and type(module).forward is torch.nn.Conv2d.forward
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
        and module.dilation == (1, 1)
    )


def _accumulate(total: torch.Tensor | None, inp: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    term = inp * _like_layout(grad, inp)
    return term if total is None else total + term


def _like_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Give a gradient the memory layout of the tensor it pairs with: mixed layouts send CPU
    convolution backward and elementwise products down slow generic paths."""
    if grad.ndim == 4 and like.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return grad.contiguous(memory_format=torch.channels_last)
    return grad


_CACHED_CLASSES: dict[type, type] = {}


def cached(hook: Hook | None) -> Hook | None:
    """The same rule with its modified forward cached (other hooks are returned unchanged)."""
    if hook is None or not isinstance(hook, BasicHook) or isinstance(hook, CachedForwardHook):
        return hook
    cls = type(hook)
    if cls not in _CACHED_CLASSES:
        _CACHED_CLASSES[cls] = type(f"Cached{cls.__name__}", (CachedForwardHook, cls), {})
    clone = hook.copy()
    clone.__class__ = _CACHED_CLASSES[cls]
    return clone
