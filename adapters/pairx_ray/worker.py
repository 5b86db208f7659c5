"""The Ray worker: one long-lived process per model copy, explaining one query's records at a time.

It builds its model once (from a spec string or a factory, never from a pickled live model), runs the
ordinary hook (:func:`pairx_plugin.hook.explain_matches`) on each group it gets, and writes artifacts
into the shared content-addressed store. It writes no manifest: the hook's manifest lines are
collected in memory (:class:`CollectingStore`) and returned, and the driver writes them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.records import MatchRecord

#: what reaches a worker as "the model": a spec (``pairx_plugin.models.load_model_spec``) or a factory
ModelSource = str | Callable[[], Any]


@dataclass(frozen=True)
class Outcome:
    """One record's result: its position in the driver's list, the manifest status and the record."""

    index: int
    status: str
    record: MatchRecord


class _Collector:
    """Stands in for a ``RunManifest``: keeps each line in memory instead of writing a file."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, MatchRecord]] = []
        self.error = None
        self.lines_written = 0

    def append(self, index: int, status: str, record: MatchRecord) -> None:
        self.lines.append((index, status, record))
        self.lines_written += 1

    def close(self) -> None:
        pass


class CollectingStore(ArtifactStore):
    """The shared store, except that ``open_run`` collects manifest lines in memory (the driver writes them)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.collected: _Collector | None = None

    @contextlib.contextmanager
    def open_run(self, run_name: str) -> Iterator[Any]:
        self.collected = _Collector()
        yield self.collected


def build_model(source: ModelSource, weights: str | None = None, trust_remote_code: bool = False) -> Any:
    """The ``nn.Module`` a spec or factory gives, in eval mode."""
    if isinstance(source, str):
        from pairx_plugin.models import load_model_spec

        if trust_remote_code:
            return load_model_spec(source, weights, trust_remote_code=True).model.eval()
        return load_model_spec(source, weights).model.eval()
    from pairx_plugin.models import ModelBundle

    built = source()
    module = built.model if isinstance(built, ModelBundle) else built  # a factory may return a ModelBundle
    return module.eval()


class ExplainWorker:
    """The actor class (wrapped with ``ray.remote`` by the runner, so this module never needs Ray)."""

    def __init__(
        self,
        model: ModelSource,
        weights: str | None,
        images: Any,
        config: Any,
        store_root: str,
        threads: int | None,
        trust_remote_code: bool = False,
    ) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        from pairx_plugin.config import load_config
        from pairx_plugin.engine.engine import PairX

        self.images = images
        self.store_root = store_root
        #: why this worker could not start (the driver reports it and stops), else None
        self.startup_error: str | None = None
        try:
            self.config = load_config(config)
            self.model = build_model(model, weights, trust_remote_code)
            if self.config.device != "cpu" and torch.cuda.is_available() and not next(self.model.parameters()).is_cuda:
                self.model = self.model.to("cuda")
            self.engine = PairX(self.model, **self.config.engine_kwargs())
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which names it
            self.startup_error = f"{type(exc).__name__}: {exc}"

    def pid(self) -> tuple[int, str | None]:
        """This worker's pid, and why it could not start (None when it is ready)."""
        return os.getpid(), self.startup_error

    def explain(self, indices: list[int], records: list[MatchRecord]) -> list[Outcome]:
        """Explain one group (one query's records); the outcomes carry the driver's indices."""
        from pairx_plugin.hook import explain_matches

        store = CollectingStore(self.store_root)
        explain_matches(
            records=records,
            images=self.images,
            model=self.model,
            config=self.config,
            store=store,
            engine=self.engine,
            progress=False,
            run_name="ray-worker",
        )
        assert store.collected is not None
        return [Outcome(indices[local], status, record) for local, status, record in store.collected.lines]


__all__ = ["CollectingStore", "ExplainWorker", "ModelSource", "Outcome", "build_model"]
