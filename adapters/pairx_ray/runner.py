"""The Ray driver: spread a run's records over long-lived workers, write the one manifest.

:func:`explain_on_ray` takes the hook's arguments, except that the model is a *spec* string
(``"builtin"``, ``"timm:NAME"``, ``"module:callable"``) or a zero-argument *factory* (a picklable
top-level function returning an ``nn.Module`` or a ``ModelBundle``): each worker builds its own copy
once. The image source is pickled to the workers, so it must be picklable (``FileImageSource`` and
the wildlife-tools ``DatasetImageSource`` are) and read files every worker can reach.

Work is grouped by query (a query's candidates stay together, so its forward pass is shared). Each
worker writes artifacts straight into the content-addressed store (a store hit costs nothing, two
writers of one artifact write the same files atomically); manifest lines come back to the driver,
which appends them to ``runs/<run_name>.jsonl`` as groups finish. A worker that dies (killed, out of
memory) is replaced and its unfinished group re-run (``max_retries`` times; then its records carry the
error); records it had already stored come back as cache hits, so nothing is lost or doubled. A driver
killed mid-run leaves whole manifest lines; re-running the same records (another run name) completes
from the store: every record already stored is a hit.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pairx_plugin.config import PairXConfig, load_config
from pairx_plugin.errors import ConfigError, InvalidInputError, PairXError
from pairx_plugin.records import ExplanationErrorInfo, MatchRecord, coerce_records

from .worker import ExplainWorker, ModelSource, Outcome

DEFAULT_MAX_RETRIES = 2
logger = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised where ray is absent
        raise ConfigError("Ray is not installed; install the extra: pip install 'pairx-plugin[ray]'") from exc
    return ray


def connect(address: str | None = "auto", **init_kwargs: Any) -> Any:
    """``ray.init`` unless already connected. ``address``: ``"auto"`` (join a running cluster, else start a
    local one), ``"local"`` (always a new local instance) or ``"HOST:PORT"`` / ``"ray://HOST:PORT"``."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("log_to_driver", False)
    if address in (None, "local"):
        ray.init(**init_kwargs)
    elif address == "auto":
        try:
            ray.init(address="auto", **init_kwargs)
        except ConnectionError:
            ray.init(**init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    return ray


def plan_groups(records: list[MatchRecord], config: PairXConfig) -> tuple[list[list[int]], list[Outcome]]:
    """Query groups of record indices to send out, and the outcomes decided here (duplicate pairs).

    Duplicates get the hook's own error (with the driver's indices); ``rank >= top_k`` records travel
    with their query's group and come back ``not_explained`` from the hook.
    """
    groups: OrderedDict[str, list[int]] = OrderedDict()
    first: dict[tuple[str, str], int] = {}
    decided = []
    for index, record in enumerate(records):
        if record.pair in first:
            error = InvalidInputError(
                f"duplicate record: (query_id, candidate_id) = {record.pair!r} already appears at index "
                f"{first[record.pair]}; pass each pair once"
            )
            info = ExplanationErrorInfo.from_exception(error, "load")
            decided.append(Outcome(index, "error", record.with_error(info)))
            continue
        first[record.pair] = index
        groups.setdefault(record.query_id, []).append(index)
    return list(groups.values()), decided


def _is_module(value: Any) -> bool:
    from torch import nn

    return isinstance(value, nn.Module)


def _worker_pid(ray: Any, actor: Any) -> int:
    """The worker's pid, once its model is built; a worker that cannot build it stops the whole call."""
    from ray.exceptions import RayActorError

    try:
        pid, problem = ray.get(actor.pid.remote())
    except RayActorError as exc:
        problem = _one_line(exc)
    if problem is not None:
        raise ConfigError(
            f"a Ray worker could not start (building the model or loading its settings failed): "
            f"{problem}; check the model spec or factory, and that the worker can import it"
        )
    return int(pid)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resources(workers: int, use_gpu: bool) -> tuple[dict[str, Any], int | None]:
    if use_gpu:
        return {"num_gpus": 1, "num_cpus": 1}, None
    threads = max(1, (os.cpu_count() or 1) // workers)
    return {"num_cpus": 1}, threads


def explain_on_ray(
    *,
    records: Sequence[MatchRecord],
    images: Any,
    model: ModelSource,
    config: PairXConfig | Any,
    store_root: str | os.PathLike[str] | None = None,
    workers: int = 2,
    address: str | None = "auto",
    run_name: str | None = None,
    progress: bool = True,
    weights: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    use_gpu: bool | None = None,
    on_outcome: Callable[[Outcome, int], None] | None = None,
    trust_remote_code: bool = False,
) -> list[MatchRecord]:
    """Explain ``records`` on ``workers`` Ray actors; every record back, in order (as the hook does).

    store_root: the shared store (default ``config.output_dir``); every worker must see it at this path.
    use_gpu: one GPU per worker (default: when the driver sees CUDA and ``config.device`` is not cpu).
    on_outcome(outcome, worker_pid): called on the driver for each record as it arrives (progress
    displays, tests).
    """
    from tqdm.auto import tqdm

    from pairx_plugin.artifacts.store import ArtifactStore, check_run_name, new_run_name

    config = config if isinstance(config, PairXConfig) else load_config(config)
    given = coerce_records(records)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be an integer >= 1, got {workers!r}")
    if not isinstance(model, str) and (not callable(model) or _is_module(model)):
        raise InvalidInputError(
            f"model must be a spec string ('builtin', 'timm:NAME', 'module:callable') or a zero-argument factory, "
            f"got {type(model).__name__}; a live model is not sent to workers"
        )
    if not given:
        return []
    if not config.enabled:
        return [record.model_copy() for record in given]
    root = store_root if store_root is not None else config.output_dir
    if root is None:
        raise ConfigError("pairx.output_dir: not set and no store_root was passed; the workers need a shared store")
    root = os.path.abspath(os.fspath(root))
    store = ArtifactStore(root)
    run_name = check_run_name(run_name) if run_name is not None else new_run_name("ray")
    if use_gpu is None:
        import torch

        use_gpu = config.device != "cpu" and torch.cuda.is_available()
    ray = connect(address)
    options, threads = _resources(workers, use_gpu)
    actor_class = ray.remote(max_restarts=0)(ExplainWorker).options(**options)

    def start() -> Any:
        return actor_class.remote(
            model, weights, images, config.model_dump(mode="json"), root, threads, trust_remote_code
        )

    groups, decided = plan_groups(given, config)
    results: list[MatchRecord | None] = [None] * len(given)
    with (
        store.open_run(run_name) as manifest,
        tqdm(total=len(given), desc="PAIR-X (ray)", unit="record", disable=not progress) as bar,
    ):

        def finish(outcome: Outcome, pid: int) -> None:
            if results[outcome.index] is not None:  # never twice (defensive: a retried group's duplicate)
                return
            results[outcome.index] = outcome.record
            manifest.append(outcome.index, outcome.status, outcome.record)  # type: ignore[arg-type]
            bar.update(1)
            if on_outcome is not None:
                on_outcome(outcome, pid)

        for outcome in decided:
            finish(outcome, os.getpid())
        _dispatch(ray, start, groups, given, workers, max_retries, finish)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise PairXError(f"internal error: records {missing} got no outcome")
    return [r for r in results if r is not None]


def _dispatch(
    ray: Any,
    start: Callable[[], Any],
    groups: list[list[int]],
    records: list[MatchRecord],
    workers: int,
    max_retries: int,
    finish: Callable[[Outcome, int], None],
) -> None:
    """Keep every worker busy with one group; replace a dead worker and re-queue its group."""

    pending = list(range(len(groups)))[::-1]  # a stack of group numbers, first group on top
    attempts = [0] * len(groups)
    started: list[Any] = []

    def start_tracked() -> Any:
        actor = start()
        started.append(actor)
        return actor

    try:
        _loop(ray, start_tracked, groups, records, workers, max_retries, finish, pending, attempts)
    finally:
        for actor in started:  # the workers live for one call: free their CPUs / GPUs for the next
            ray.kill(actor, no_restart=True)


def _loop(
    ray: Any,
    start: Callable[[], Any],
    groups: list[list[int]],
    records: list[MatchRecord],
    workers: int,
    max_retries: int,
    finish: Callable[[Outcome, int], None],
    pending: list[int],
    attempts: list[int],
) -> None:
    from ray.exceptions import RayActorError, WorkerCrashedError

    idle = [start() for _ in range(min(workers, len(groups)))]
    pids = {id(actor): _worker_pid(ray, actor) for actor in idle}
    running: dict[Any, tuple[int, Any]] = {}
    while pending or running:
        while pending and idle:
            number, actor = pending.pop(), idle.pop()
            indices = groups[number]
            running[actor.explain.remote(indices, [records[i] for i in indices])] = (number, actor)
        done, _ = ray.wait(list(running), num_returns=1)
        number, actor = running.pop(done[0])
        try:
            outcomes = ray.get(done[0])
        except (RayActorError, WorkerCrashedError) as exc:
            attempts[number] += 1
            logger.warning(
                "a Ray worker died while explaining query %r (%s); starting another, attempt %d of %d",
                records[groups[number][0]].query_id,
                type(exc).__name__,
                attempts[number],
                max_retries + 1,
            )
            ray.kill(actor, no_restart=True)
            replacement = start()
            pids[id(replacement)] = _worker_pid(ray, replacement)
            idle.append(replacement)
            if attempts[number] <= max_retries:
                pending.append(number)
            else:
                error = PairXError(
                    f"the Ray worker explaining this query died {attempts[number]} times "
                    f"({type(exc).__name__}); check worker memory and logs",
                    stage="forward",
                )
                info = ExplanationErrorInfo.from_exception(error, "forward")
                for index in groups[number]:
                    finish(Outcome(index, "error", records[index].with_error(info)), -1)
            continue
        for outcome in outcomes:
            finish(outcome, pids.get(id(actor), -1))
        idle.append(actor)


def run_records_path(store_root: str | os.PathLike[str], run_name: str) -> Path:
    return Path(store_root) / "runs" / f"{run_name}.jsonl"


class RayExplainer:
    """A drop-in for the hook (same keyword arguments) that explains on Ray; hosts hand it where they
    would call :func:`pairx_plugin.hook.explain_matches` (the wildlife-tools ``run --ray`` does).

    The live ``model`` the host passes is NOT sent to the workers: they build their own from ``model``
    given here (a spec string or a factory, with ``weights``). ``store`` must be an ``ArtifactStore`` on a
    path every worker reaches.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        weights: str | None = None,
        workers: int = 2,
        address: str | None = "auto",
        max_retries: int = DEFAULT_MAX_RETRIES,
        trust_remote_code: bool = False,
    ) -> None:
        self.model, self.weights, self.workers = model, weights, workers
        self.trust_remote_code = trust_remote_code
        self.address, self.max_retries = address, max_retries

    def __call__(
        self,
        *,
        records: Sequence[MatchRecord],
        images: Any,
        model: Any = None,
        config: Any,
        store: Any = None,
        engine: Any = None,
        progress: bool = True,
        run_name: str | None = None,
    ) -> list[MatchRecord]:
        root = None if store is None else store.root
        return explain_on_ray(
            records=records,
            images=images,
            model=self.model,
            config=config,
            store_root=root,
            workers=self.workers,
            address=self.address,
            run_name=run_name,
            progress=progress,
            weights=self.weights,
            max_retries=self.max_retries,
            trust_remote_code=self.trust_remote_code,
        )


__all__ = ["DEFAULT_MAX_RETRIES", "RayExplainer", "connect", "explain_on_ray", "plan_groups", "run_records_path"]
