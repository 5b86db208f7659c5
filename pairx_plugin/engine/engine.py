"""The PAIR-X engine: explain why a metric-learning model finds two images similar.

For a query and its candidates, :class:`PairX`

1. forwards each chunk of distinct candidates (up to ``max_batch_images``, within
   ``max_batch_pixels``) as one batch with one query row per candidate, under the relevance
   backend, keeping each requested layer's output and the embeddings;
2. seeds relevance at each embedding from the cosine (see :mod:`.seeds`) and propagates it to
   the layers only (autograd stops at the layer) — relevance per cell = |R| summed over channels;
3. matches the two feature maps' cells by mutual nearest neighbours (L2) and scores each match by
   relevance0 × relevance1;
4. back-projects each of the top ``k_colors`` matched cells of each image to its pixels: one
   cell per row per backward pass, each distinct query cell once per call;
5. computes plausibility metrics (IRM, MC, inlier ratio, match count).

The model is left exactly as it was (see :mod:`.guard`); inputs are never modified.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError, PairXError, StepError
from .guard import model_guard
from .hooks import StopForward, capture_outputs
from .layers import default_layer_key, resolve_layers
from .layouts import Layout, detect_layout
from .locks import model_lock
from .matching import mutual_nearest_neighbours, nearest_ratio
from .metrics import pair_metrics
from .modelinfo import model_device, model_dtype
from .relevance import RelevanceBackend, RelevanceRun, choose_backend
from .results import LayerExplanation, Match, PairExplanation
from .seeds import SEEDS, cosine

try:  # the one version source (pairx_plugin/versions.py) where present
    from ..versions import ENGINE_VERSION
except ImportError:  # pragma: no cover - before versions.py exists
    #: Bumped whenever the numbers the engine produces for the same inputs change, so stored
    #: artifacts made by an older engine are not served as cache hits (it is part of every artifact id).
    ENGINE_VERSION = "3"

MODES = ("conservative", "parity")

#: Input pixels per replicated back-projection batch when ``pixel_rows`` is automatic on CUDA
#: (128 rows at 224 px, 33 at 440 px).
CUDA_PIXEL_BATCH_PIXELS = 128 * 224 * 224

#: Parameter dtypes the engine refuses: LRP's stabilised divisions underflow in half precision, and
#: converting a host's model silently would copy or change it (see docs/engine.md, "Precision").
UNSUPPORTED_DTYPES = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Give an exception escaping a step its stage: a PairXError gets ``stage`` (if unset), anything
    else becomes a :class:`StepError` at that stage with the original as ``__cause__``."""
    try:
        yield
    except PairXError as exc:
        if exc.stage is None:
            exc.stage = name
        raise
    except Exception as exc:
        raise PairXError.wrap(exc, stage=name) from exc


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc.__cause__, torch.cuda.OutOfMemoryError)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _out_of_memory_alone(exc: PairXError, candidate: int) -> PairXError:
    failure = StepError(
        f"out of memory explaining candidates[{candidate}] even alone with the query ({exc}); use a smaller "
        "input size, fewer layers, a smaller k_colors, or run on the CPU",
        stage=exc.stage,
        candidate_index=candidate,
    )
    failure.__cause__ = exc.__cause__ if exc.__cause__ is not None else exc
    return failure


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass
class ForwardPass:
    """One forward of a batch of images under the backend: the graph stays alive while referenced."""

    x: torch.Tensor  # (n, 3, H, W) leaf that requires grad
    emb: torch.Tensor  # (n, D)
    native: dict[str, torch.Tensor]  # layer outputs in the model's own layout
    layouts: dict[str, Layout]
    layer_tick: int = 0  # backend clock when the deepest explained layer finished its forward
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # detached NCHW maps

    def drop_above_layers(self, run: RelevanceRun) -> None:
        """Relevance has reached the layers: free the graph and caches between them and the embedding."""
        self.emb = self.emb.detach()
        run.release_after(self.layer_tick)

    def nchw(self, key: str) -> torch.Tensor:
        if key not in self.maps:
            self.maps[key] = self.layouts[key].to_nchw(self.native[key]).detach()
        return self.maps[key]


@dataclass
class LayerMatching:
    """One pair at one layer between the matching and the pixel steps.

    ``idx0``/``idx1``: flat query/candidate cell indices of every mutual match, by relevance
    descending; ``pixel_query``/``pixel_candidate``: (k, H, W) maps of the first k matches, filled by
    the pixel step.
    """

    idx0: list[int]
    idx1: list[int]
    distance: np.ndarray
    relevance: np.ndarray
    rel_q: np.ndarray
    rel_c: np.ndarray
    ratio: np.ndarray | None = None  # Lowe's ratio per match (matching.nearest_ratio), same order
    pixel_query: np.ndarray | None = None
    pixel_candidate: np.ndarray | None = None


@dataclass
class CallState:
    """Everything one ``explain_query`` call changes: owned by the call, never by the PairX object."""

    run: RelevanceRun
    query: torch.Tensor
    candidates: Sequence[torch.Tensor]
    query_pixel_cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)


class PairX:
    """Explain query–candidate matches of an embedding model (B,3,H,W) -> (B,D).

    Parameters
    ----------
    model: the embedding model; its device and dtype decide where the work runs.
    layer_keys: submodule names to explain at (``None``/``"auto"``: the suggested default layer).
    k_lines: number of top matches kept per pair (drawn as lines).
    k_colors: number of top matches back-projected to pixels per pair.
    mode: ``"conservative"`` (relevance-conserving LRP) or ``"parity"`` (the published PAIR-X).
    backend: ``"auto"`` or a relevance backend name (``"zennit-lrp"``, ``"gradient-x-input"``).
    max_batch_images: most candidate images forwarded together.
    max_batch_pixels: most input pixels in one forward batch (a chunk of n candidates is 2n rows:
        one query row per candidate); bounds memory for large inputs. The default, 8 × 224², lets 4
        candidates ride at 224 px but only one at 440 px (a 440-px EfficientNetV2 pair already
        peaks near 6 GB on CPU).
    input_size: input size used to pick the default layer when ``layer_keys`` is None.
    optimised: False runs the backend's straightforward path (same numbers, slower; for tests).
    pixel_rows: how cells are back-projected to pixels. ``0``: on the explaining forward, one cell
        per image row and backward pass (a pass costs per row on CPU, so this wastes nothing
        there). ``n >= 1``: every cell gets a row of its own in a forward that stops at the layer,
        ``n`` rows per forward+backward, so a whole top-k query takes one or a few passes (what a
        GPU wants). ``None`` (default): 0 on CPU; on CUDA as many rows as
        ``CUDA_PIXEL_BATCH_PIXELS`` input pixels allow.

    One ``PairX`` may be shared by any number of threads: explanations of the same model are
    serialised by :func:`~pairx_plugin.engine.locks.model_lock`, and each call keeps its state in a
    :class:`CallState` of its own. float16/bfloat16 models are refused (``PairXError``): pass
    ``model.float()`` or a float32 copy.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_keys: Sequence[str] | str | None = None,
        k_lines: int = 20,
        k_colors: int = 10,
        mode: str = "conservative",
        backend: str = "auto",
        max_batch_images: int = 8,
        max_batch_pixels: int = 8 * 224 * 224,
        input_size: int | tuple[int, int] = 224,
        optimised: bool = True,
        pixel_rows: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        dtype = model_dtype(model)
        if dtype in UNSUPPORTED_DTYPES:
            raise InvalidInputError(
                f"the model's parameters are {dtype}; PairX explains float32 (or float64) models only, because "
                "LRP's stabilised divisions lose the relevance in half precision. Pass model.float() (or a float32 "
                "copy, copy.deepcopy(model).float(), to keep yours in half precision) and float32 inputs"
            )
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.mode = mode
        self.k_lines = _check_positive_int("k_lines", k_lines)
        self.k_colors = _check_positive_int("k_colors", k_colors)
        self.max_batch_images = _check_positive_int("max_batch_images", max_batch_images)
        self.max_batch_pixels = _check_positive_int("max_batch_pixels", max_batch_pixels)
        if pixel_rows is not None and (
            isinstance(pixel_rows, bool) or not isinstance(pixel_rows, (int, np.integer)) or pixel_rows < 0
        ):
            raise InvalidInputError(f"pixel_rows must be None (automatic), 0 or a positive integer, got {pixel_rows!r}")
        self.pixel_rows = None if pixel_rows is None else int(pixel_rows)
        self.backend: RelevanceBackend = choose_backend(model, mode=mode, name=backend, optimised=optimised)
        if layer_keys is None or layer_keys == "auto":
            layer_keys = [default_layer_key(model, input_size)]
        elif isinstance(layer_keys, str):
            layer_keys = [layer_keys]
        self.layer_modules = resolve_layers(model, list(layer_keys))
        self.layer_keys = list(self.layer_modules)
        self._seed = SEEDS[mode]

    # ------------------------------------------------------------------ public API
    def explain_pair(self, x0: torch.Tensor, x1: torch.Tensor) -> PairExplanation:
        """Explain one pair; ``x0``/``x1`` are (1,3,H,W) tensors exactly as fed to the model."""
        result = self.explain_query(x0, [x1])[0]
        assert isinstance(result, PairExplanation)  # without return_exceptions a failure raises
        return result

    def explain_query(
        self,
        query: torch.Tensor,
        candidates: Sequence[torch.Tensor],
        *,
        return_exceptions: bool = False,
    ) -> list[PairExplanation | PairXError]:
        """Explain a query against each candidate, sharing the query's forward pass.

        With ``return_exceptions=True`` a failing candidate yields its :class:`PairXError` in its
        slot instead of raising; a failing query raises in any case.
        """
        if isinstance(candidates, torch.Tensor) or not isinstance(candidates, Sequence):
            raise InvalidInputError(f"candidates must be a list of (1,3,H,W) tensors, got {type(candidates).__name__}")
        if len(candidates) == 0:
            raise InvalidInputError("candidates is empty: give at least one candidate image tensor")
        self._check_input(query, "query")
        results: list[PairExplanation | PairXError | None] = [None] * len(candidates)
        good: list[int] = []
        for i, cand in enumerate(candidates):
            try:
                self._check_input(cand, f"candidates[{i}]")
                if cand.shape != query.shape:
                    raise InvalidInputError(
                        f"candidates[{i}] has shape {tuple(cand.shape)} but the query has {tuple(query.shape)}; "
                        "feed every image at the model's one input size"
                    )
                good.append(i)
            except PairXError as exc:
                if exc.candidate_index is None:
                    exc.candidate_index = i
                if not return_exceptions:
                    raise
                results[i] = exc
        # one forward per distinct image: identical candidate tensors share one slot
        distinct: list[int] = []
        same_as: dict[int, int] = {}
        for i in good:
            twin = next((j for j in distinct if _same_image(candidates[i], candidates[j])), None)
            if twin is None:
                distinct.append(i)
            else:
                same_as[i] = twin
        # the lock covers everything that changes the model: the guard, the backend's merges and hooks
        with model_lock(self.model), model_guard(self.model), self.backend.run(self.model) as run:
            state = CallState(run=run, query=query, candidates=candidates)
            pending = self._chunks(distinct, int(query.shape[-2] * query.shape[-1]))
            while pending:
                chunk = pending.pop(0)
                explained: dict[int, PairExplanation | PairXError] | None
                try:
                    explained = self._explain_chunk(state, chunk)
                except PairXError as exc:
                    explained = self._after_failure(exc, chunk, pending, results, run, return_exceptions)
                if explained is None:  # re-queued: halved after running out of memory, or without its culprit
                    _release_cached_memory()
                    continue
                for i, value in explained.items():
                    results[i] = value
        for i, twin in same_as.items():
            results[i] = results[twin]
        return results  # type: ignore[return-value]

    def _after_failure(
        self,
        exc: PairXError,
        chunk: list[int],
        pending: list[list[int]],
        results: list[PairExplanation | PairXError | None],
        run: RelevanceRun,
        return_exceptions: bool,
    ) -> dict[int, PairExplanation | PairXError] | None:
        """What a failed chunk yields: None when it was re-queued, else its error per candidate (or raise).

        * CUDA out of memory: free cached memory, halve the chunk and retry; a single candidate that
          still does not fit fails with a :class:`StepError` saying so.
        * A failure that names its candidate fails only that one; the others are redone.
        """
        if _is_out_of_memory(exc):
            run.release_after(-1)  # nothing of the failed pass is needed again
            if len(chunk) > 1:
                half = len(chunk) // 2
                pending[:0] = [chunk[:half], chunk[half:]]
                return None
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            traceback.clear_frames(cause.__traceback__)  # keep the trace, drop the failed pass's tensors
            exc = _out_of_memory_alone(exc, chunk[0])
        if not return_exceptions or exc.is_query:
            raise exc
        culprit = exc.candidate_index
        if culprit is not None and culprit in chunk and len(chunk) > 1:
            results[culprit] = exc
            pending.insert(0, [i for i in chunk if i != culprit])
            return None
        return {i: exc for i in chunk}

    # ------------------------------------------------------------------ validation
    def _check_input(self, x: object, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"{name} must be a torch.Tensor of shape (1,3,H,W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise InvalidInputError(
                f"{name} must have shape (1, 3, H, W) (one image, as fed to the model), got {tuple(x.shape)}"
            )
        if x.shape[2] < 8 or x.shape[3] < 8:
            raise InvalidInputError(f"{name} is too small: {tuple(x.shape)}; images need at least 8×8 pixels")
        dtype = model_dtype(self.model)
        if x.dtype != dtype:
            raise InvalidInputError(
                f"{name} has dtype {x.dtype}, but the model's parameters are {dtype}; convert with .to({dtype})"
            )
        device = model_device(self.model)
        if x.device != device:
            raise InvalidInputError(
                f"{name} is on {x.device}, but the model is on {device}; move it with .to('{device}')"
            )
        if not torch.isfinite(x).all():
            raise InvalidInputError(f"{name} contains NaN or infinite values")

    def _chunks(self, indices: list[int], image_pixels: int) -> list[list[int]]:
        """Candidate chunks: at most ``max_batch_images``, and the chunk's batch (one query row per
        candidate plus the candidates) within the pixel budget."""
        by_pixels = self.max_batch_pixels // max(1, image_pixels) // 2
        step = max(1, min(self.max_batch_images, by_pixels))
        return [indices[start : start + step] for start in range(0, len(indices), step)]

    # ------------------------------------------------------------------ passes
    def _forward(self, run: RelevanceRun, images: list[torch.Tensor], rows: list[int | None]) -> ForwardPass:
        """Forward ``images`` as one batch; ``rows[i]`` is the candidate index of row i (None: the query)."""
        # channels-last: CPU convolutions (strided depthwise ones most of all) run their backward
        # on a fast path in this layout; values are identical
        x = torch.cat([img.detach() for img in images]).contiguous(memory_format=torch.channels_last)
        x = x.clone(memory_format=torch.channels_last).requires_grad_(True)
        ticks: list[int] = []
        tick_hooks = [
            m.register_forward_hook(lambda *_: ticks.append(run.clock())) for m in self.layer_modules.values()
        ]
        # rows showing the same image (the query, once per candidate) share per-forward constants
        first_row: dict[int | None, int] = {}
        run.declare_rows([first_row.setdefault(image, row) for row, image in enumerate(rows)])
        try:
            with torch.enable_grad(), capture_outputs(self.layer_modules) as outputs:
                emb = run.module(x)
        finally:
            run.declare_rows(None)
            for handle in tick_hooks:
                handle.remove()
        if not isinstance(emb, torch.Tensor):
            raise InvalidInputError(f"the model must return a (B, D) embedding tensor, got {type(emb).__name__}")
        if emb.ndim > 2:
            emb = emb.flatten(1)
        if emb.ndim != 2 or emb.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"the model returned shape {tuple(emb.shape)} for a batch of {x.shape[0]}; expected (B, D)"
            )
        norms = emb.detach().norm(dim=1)
        for row, candidate in enumerate(rows):
            name = "query" if candidate is None else f"candidates[{candidate}]"
            problem = None
            if not torch.isfinite(emb[row]).all():
                problem = f"the embedding of {name} contains NaN or infinite values"
            elif norms[row] == 0:
                problem = f"the embedding of {name} has zero norm; cosine similarity is undefined"
            if problem:
                raise InvalidInputError(
                    problem + " (check the image and the model's weights)",
                    is_query=candidate is None,
                    candidate_index=candidate,
                )
        layouts = {}
        for key, module in self.layer_modules.items():
            out = outputs.get(key)
            if out is None:
                raise PairXError(
                    f"layer {key!r} did not run during the forward pass; choose a layer on the "
                    "path from the input to the embedding"
                )
            layout = detect_layout(self.model, key, module, out)
            if layout is None:
                raise InvalidInputError(
                    f"layer {key!r} outputs {type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}, "
                    "which is not a feature map layout pairx understands (NCHW, NHWC stage, or tokens)"
                )
            layouts[key] = layout
        return ForwardPass(
            x=x,
            emb=emb,
            native={k: outputs[k] for k in self.layer_modules},
            layouts=layouts,
            layer_tick=max(ticks, default=0),
        )

    def _layer_relevance(self, p: ForwardPass, relevance_at_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """(n, h, w) relevance per layer: LRP from the embedding to the layer, |R| summed over channels."""
        keys = self.layer_keys
        grads = torch.autograd.grad(
            p.emb,
            [p.native[k] for k in keys],
            grad_outputs=self.backend.seed(relevance_at_emb, p.emb.detach()),
            retain_graph=True,
            allow_unused=True,
        )
        out = {}
        for key, grad in zip(keys, grads):
            if grad is None:
                raise PairXError(f"no relevance reaches layer {key!r} from the embedding")
            rel = self.backend.relevance(grad, p.native[key].detach())
            out[key] = p.layouts[key].to_nchw(rel).abs().sum(dim=1)
        return out

    def _pixel_relevance(self, p: ForwardPass, key: str, cells: list[list[int | None]]) -> list[torch.Tensor]:
        """Back-project cells of layer ``key`` to pixels.

        ``cells[k][i]`` is the flat cell index seeded in image ``i`` for back-projection ``k`` (None:
        nothing for that image). Each ``k`` is one backward pass over the whole batch. Returns, per
        ``k``, an (n, H, W) map: relevance summed over colour channels, then absolute value.
        """
        fm = p.nchw(key)
        _, _, _, w = fm.shape
        native = p.native[key]
        seeds = torch.zeros((len(cells),) + tuple(fm.shape), dtype=fm.dtype, device=fm.device)
        for k, per_image in enumerate(cells):
            for i, cell in enumerate(per_image):
                if cell is not None:
                    y, x = divmod(cell, w)
                    seeds[k, i, :, y, x] = fm[i, :, y, x]
        native_seeds = torch.stack([p.layouts[key].from_nchw(s, native) for s in seeds])
        grad_seeds = self.backend.seed(native_seeds, native.detach().unsqueeze(0))
        # one backward per seed index, each covering every image of the batch; the rule hooks reuse
        # the modified forwards built on the first one. (Seeds as a vmapped batch dimension,
        # ``is_grads_batched``, measured slower on CPU: 3.5 s vs 2.6 s per lite0@224 pair.)
        grads = torch.stack(
            [torch.autograd.grad(native, p.x, grad_outputs=g, retain_graph=True)[0] for g in grad_seeds]
        )
        return list(self.backend.relevance(grads, p.x.detach().unsqueeze(0)).sum(dim=2).abs())

    def _explain_chunk(self, state: CallState, chunk: list[int]) -> dict[int, PairExplanation | PairXError]:
        """Explain the query against one chunk of candidates, all from one forward pass.

        The batch holds one query row per candidate (rows ``0..n-1``) and the candidates after them
        (rows ``n..2n-1``): query row ``j`` carries the query's relevance for candidate ``j``, so one
        relevance pass serves every pair, and the query's distinct back-projected cells are spread
        over the ``n`` query rows, so every row of every pixel pass has a cell to carry (a pass costs
        mostly per pass, little per row). Every backward runs on this one graph (zennit's rule hooks
        keep the inputs of the most recent forward, so a graph must be finished before the next
        forward starts).
        """
        n = len(chunk)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with _stage("forward"):
            p = self._forward(
                state.run, [state.query] * n + [state.candidates[i] for i in chunk], [None] * n + list(chunk)
            )
        timings["forward"] = time.perf_counter() - start

        start = time.perf_counter()
        e = p.emb.detach()
        e_q, e_c = e[:1].expand(n, -1), e[n:]
        cosines = cosine(e_q, e_c)
        seed_q, seed_c = self._seed(e_q, e_c)
        with _stage("relevance"):
            rel = self._layer_relevance(p, torch.cat([seed_q, seed_c]))
            p.drop_above_layers(state.run)
        timings["relevance"] = time.perf_counter() - start

        start = time.perf_counter()
        pairs: list[dict[str, LayerMatching]] = [{} for _ in chunk]
        with _stage("match"):
            for key in self.layer_keys:
                fm = p.nchw(key)
                for j in range(n):
                    pairs[j][key] = self._match(fm[0], fm[n + j], rel[key][j], rel[key][n + j])
        timings["matching"] = time.perf_counter() - start

        start = time.perf_counter()
        rows = self._pixel_rows_for(state.query)
        with _stage("pixels"):
            for key in self.layer_keys:
                if rows:
                    self._pixels_replicated(state, key, chunk, [pairs[j][key] for j in range(n)], rows)
                else:
                    self._pixels_at(state, p, key, [pairs[j][key] for j in range(n)])
        timings["pixels"] = time.perf_counter() - start

        out: dict[int, PairExplanation | PairXError] = {}
        for j, i in enumerate(chunk):
            layers = {key: self._layer_result(key, pairs[j][key], p) for key in self.layer_keys}
            q_h, q_w = state.query.shape[-2:]
            c_h, c_w = state.candidates[i].shape[-2:]
            out[i] = PairExplanation(
                cosine=float(cosines[j]),
                layers=layers,
                query_size=(int(q_h), int(q_w)),
                candidate_size=(int(c_h), int(c_w)),
                mode=self.mode,
                backend=self.backend.name,
                timings=dict(timings),
            )
        return out

    def _pixels_at(self, state: CallState, p: ForwardPass, key: str, matchings: list[LayerMatching]) -> None:
        """Fill each matching's pixel maps at ``key``.

        The batch is ``n`` query rows then ``n`` candidate rows. Each distinct query cell is
        back-projected once per call (cached across chunks), its cells dealt round-robin over the
        query rows; candidate ``j``'s cells go to row ``n + j``, one per pass.
        """
        n = len(matchings)
        H, W = p.x.shape[-2:]
        cand_cells = [m.idx1[: self.k_colors] for m in matchings]
        wanted = self._uncached_query_cells(state, key, matchings)
        depth = max([-(-len(wanted) // n)] + [len(cells) for cells in cand_cells])
        plan: list[list[int | None]] = [[None] * (2 * n) for _ in range(depth)]
        for t, cell in enumerate(wanted):
            plan[t // n][t % n] = cell
        for j, cells in enumerate(cand_cells):
            for t, cell in enumerate(cells):
                plan[t][n + j] = cell
        maps = self._pixel_relevance(p, key, plan) if depth else []
        for t, cell in enumerate(wanted):
            state.query_pixel_cache[(key, cell)] = maps[t // n][t % n].detach().cpu().numpy().astype(np.float32)
        cand_maps = {
            (j, t): maps[t][n + j].detach().cpu().numpy().astype(np.float32)
            for j, cells in enumerate(cand_cells)
            for t in range(len(cells))
        }
        self._attach_pixel_maps(state, key, matchings, cand_maps, (int(H), int(W)))

    def _uncached_query_cells(self, state: CallState, key: str, matchings: list[LayerMatching]) -> list[int]:
        """The distinct query cells of ``matchings``' coloured matches not yet back-projected in this call."""
        return list(
            dict.fromkeys(
                cell
                for m in matchings
                for cell in m.idx0[: self.k_colors]
                if (key, cell) not in state.query_pixel_cache
            )
        )

    def _attach_pixel_maps(
        self,
        state: CallState,
        key: str,
        matchings: list[LayerMatching],
        cand_maps: dict[tuple[int, int], np.ndarray],
        size: tuple[int, int],
    ) -> None:
        """Give each matching its pixel maps: candidate ``j``'s t-th map from ``cand_maps[(j, t)]``,
        the query's from the call's cache of back-projected query cells."""
        empty = np.zeros((0, *size), np.float32)
        for j, matching in enumerate(matchings):
            k_c = len(matching.idx1[: self.k_colors])
            matching.pixel_candidate = np.stack([cand_maps[(j, t)] for t in range(k_c)]) if k_c else empty
            q_cells = matching.idx0[: self.k_colors]
            matching.pixel_query = (
                np.stack([state.query_pixel_cache[(key, cell)] for cell in q_cells]) if q_cells else empty
            )

    def _pixel_rows_for(self, query: torch.Tensor) -> int:
        if self.pixel_rows is not None:
            return self.pixel_rows
        if query.device.type != "cuda":
            return 0
        return max(1, CUDA_PIXEL_BATCH_PIXELS // int(query.shape[-2] * query.shape[-1]))

    def _forward_to_layer(self, run: RelevanceRun, images: list[torch.Tensor], key: str) -> ForwardPass:
        """Forward ``images`` as one batch only up to layer ``key`` (nothing above it runs)."""
        x = torch.cat([img.detach() for img in images]).contiguous(memory_format=torch.channels_last)
        x = x.clone(memory_format=torch.channels_last).requires_grad_(True)
        module = self.layer_modules[key]
        with torch.enable_grad(), capture_outputs({key: module}, stop_after={key}) as outputs:
            try:
                run.module(x)
            except StopForward:
                pass
        out = outputs.get(key)
        layout = None if out is None else detect_layout(self.model, key, module, out)
        if out is None or layout is None:
            raise PairXError(f"layer {key!r} gave no feature map in the back-projection forward")
        return ForwardPass(x=x, emb=out.new_zeros(0), native={key: out}, layouts={key: layout})

    def _pixels_replicated(
        self, state: CallState, key: str, chunk: list[int], matchings: list[LayerMatching], rows: int
    ) -> None:
        """Fill each matching's pixel maps at ``key`` with one row per back-projected cell.

        Jobs (the distinct query cells not yet cached, then every candidate's cells) are packed
        ``rows`` to a batch; each batch is one forward up to the layer and one backward, and its
        maps leave the device once.
        """
        H, W = (int(v) for v in state.query.shape[-2:])
        jobs: list[tuple[torch.Tensor, int, tuple[int, int]]] = []  # image, cell, (candidate j or -1, slot)
        wanted = self._uncached_query_cells(state, key, matchings)
        jobs += [(state.query, cell, (-1, cell)) for cell in wanted]
        for j, m in enumerate(matchings):
            jobs += [(state.candidates[chunk[j]], cell, (j, t)) for t, cell in enumerate(m.idx1[: self.k_colors])]
        cand_maps: dict[tuple[int, int], np.ndarray] = {}
        for start in range(0, len(jobs), rows):
            part = jobs[start : start + rows]
            p = self._forward_to_layer(state.run, [image for image, _, _ in part], key)
            maps = self._pixel_relevance(p, key, [[cell for _, cell, _ in part]])[0]
            del p
            values = maps.detach().cpu().numpy().astype(np.float32)
            for row, (_, cell, (j, slot)) in enumerate(part):
                if j < 0:
                    state.query_pixel_cache[(key, cell)] = values[row]
                else:
                    cand_maps[(j, slot)] = values[row]
        self._attach_pixel_maps(state, key, matchings, cand_maps, (H, W))

    def _match(self, fm_q: torch.Tensor, fm_c: torch.Tensor, rel_q: torch.Tensor, rel_c: torch.Tensor) -> LayerMatching:
        idx0, idx1, dist = mutual_nearest_neighbours(fm_q, fm_c)
        relevance = rel_q.flatten()[idx0] * rel_c.flatten()[idx1]
        order = torch.sort(relevance, descending=True, stable=True).indices
        return LayerMatching(
            idx0=idx0[order].tolist(),
            idx1=idx1[order].tolist(),
            distance=dist[order].detach().cpu().numpy(),
            relevance=relevance[order].detach().cpu().numpy(),
            rel_q=rel_q.detach().cpu().numpy().astype(np.float32),
            rel_c=rel_c.detach().cpu().numpy().astype(np.float32),
            ratio=nearest_ratio(fm_q, fm_c, idx0, idx1)[order].detach().cpu().numpy(),
        )

    def _layer_result(self, key: str, m: LayerMatching, p: ForwardPass) -> LayerExplanation:
        hq, wq = m.rel_q.shape
        hc, wc = m.rel_c.shape
        Hq, Wq = (int(s) for s in p.x.shape[-2:])
        Hc, Wc = Hq, Wq

        def centre(idx: int, h: int, w: int, H: int, W: int) -> tuple[tuple[int, int], tuple[float, float]]:
            y, x = divmod(idx, w)
            return (x, y), ((x + 0.5) * W / w, (y + 0.5) * H / h)

        all_q = [centre(i, hq, wq, Hq, Wq) for i in m.idx0]
        all_c = [centre(i, hc, wc, Hc, Wc) for i in m.idx1]
        mutual = [
            Match(
                query_cell=cq,
                candidate_cell=cc,
                query_xy=pq,
                candidate_xy=pc,
                relevance=float(r),
                distance=float(d),
                ratio=None if m.ratio is None else float(m.ratio[n]),
            )
            for n, ((cq, pq), (cc, pc), r, d) in enumerate(zip(all_q, all_c, m.relevance, m.distance))
        ]
        metrics = pair_metrics(
            np.array([xy for _, xy in all_q], dtype=np.float32).reshape(-1, 2),
            np.array([xy for _, xy in all_c], dtype=np.float32).reshape(-1, 2),
            m.relevance,
            self.k_lines,
        )
        assert m.pixel_query is not None and m.pixel_candidate is not None  # filled by _pixels_at
        return LayerExplanation(
            key=key,
            relevance_query=m.rel_q,
            relevance_candidate=m.rel_c,
            matches=mutual[: self.k_lines],
            pixel_relevance_query=m.pixel_query,
            pixel_relevance_candidate=m.pixel_candidate,
            metrics=metrics,
            mutual_matches=mutual,
        )


def _same_image(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))


#: Kept for one release: the forward-pass record's former private name.
_Pass = ForwardPass
