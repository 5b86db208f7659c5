"""The whole wildlife-tools pipeline on a folder of images, with PAIR-X switched on.

metadata CSV (wildlife-tools columns ``image_id, identity, path``, optional ``bbox`` and split
column) → ``WildlifeDataset`` → ``DeepFeatures`` → ``CosineSimilarity`` → ``KnnClassifier`` (k=1,
wrapped by :class:`PairXKnnClassifier`) → explained top-k records, artifacts, a JSON Lines manifest
and the review page. With no split column every image queries all the others (an image never
matches itself). ``pairx-plugin run`` and ``pairx-plugin demo`` both come through here, with
wildlife-tools 0.0.9 or 1.x installed (the differences are in :mod:`.host`).

Every image path must lie inside the images folder (:mod:`.metadata`). An empty identity cell means
"unknown animal": such an image is still matched and explained, its records carry no label, it is
left out of the accuracy, and as a database image it predicts "unknown" (:data:`UNKNOWN_PREDICTION`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pairx_plugin.config import PairXConfig, load_config, resolve_device
from pairx_plugin.errors import ConfigError, InvalidInputError
from pairx_plugin.records import MatchRecord

from . import host
from .classifier import PairXKnnClassifier
from .images import image_ids, labels
from .metadata import check_image_paths

#: what the classifier predicts from a database image whose identity cell is empty (never a real label:
#: real labels are non-blank)
UNKNOWN_PREDICTION = ""

ImgLoad = Literal["auto", "full", "full_mask", "full_hide", "bbox", "bbox_mask", "bbox_hide", "crop_black"]


class DataSettings(BaseModel):
    """How the metadata CSV is read (the ``data:`` section of a run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    img_load: ImgLoad = Field(
        "auto", description="wildlife-tools img_load; auto = bbox when a bbox column exists, else full."
    )
    split_column: str = Field("split", description="Column that splits query from database; absent = no split.")
    query_splits: list[str] = Field(default_factory=lambda: ["test", "query"])
    database_splits: list[str] = Field(default_factory=lambda: ["train", "database", "gallery"])


class RunSettings(BaseModel):
    """A ``pairx-plugin run`` configuration: model spec, data reading, feature batch size, ``pairx:``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: str = Field(
        "builtin",
        description="Model spec (pairx_plugin.models): builtin, timm:NAME, hf-hub:ORG/NAME, "
        "local-dir:PATH, transformers:DIR_OR_ID, miewid[BACKBONE]:PATH or module:callable.",
    )
    weights: str | None = Field(None, description="State dict file for the model spec (optional).")
    trust_remote_code: bool = Field(
        False, description="Let a transformers: model run its own Python code (config.json auto_map, e.g. MiewID)."
    )
    batch_size: int = Field(16, ge=1, description="DeepFeatures batch size.")
    data: DataSettings = Field(default_factory=DataSettings)
    pairx: PairXConfig = Field(default_factory=PairXConfig)


def load_run_settings(source: Any = None, **pairx_overrides: Any) -> RunSettings:
    """``RunSettings`` from a YAML/JSON file path, text or dict; ``pairx_overrides`` replace pairx keys.

    Every problem raises :class:`ConfigError` naming the key (``data.img_load: ...``).
    """
    import yaml

    if source is None:
        document: dict[str, Any] = {}
    elif isinstance(source, dict):
        document = dict(source)
    else:
        text = str(source)
        path = Path(text)
        if "\n" not in text and path.suffix.lower() in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise ConfigError(f"configuration file {text!r} does not exist; check the --config path")
            text = path.read_text(encoding="utf-8")
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration is not valid YAML/JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"configuration must be a mapping of keys to values, got {type(document).__name__}")
    pairx_section = document.pop("pairx", None) or {}
    if not isinstance(pairx_section, dict):
        raise ConfigError(f"pairx: must be a mapping of PAIR-X settings, got {type(pairx_section).__name__}")
    pairx = load_config({**pairx_section, **{k: v for k, v in pairx_overrides.items() if v is not None}})
    try:
        return RunSettings.model_validate({**document, "pairx": pairx})
    except ValidationError as exc:
        raise ConfigError(_settings_error(exc)) from None


def _settings_error(exc: ValidationError) -> str:
    """One ``key: problem`` per error; unknown keys list the keys valid at that level."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc) or "<root>"
        if err["type"] == "extra_forbidden":
            model = DataSettings if loc[:1] == ["data"] else RunSettings
            lines.append(f"{key}: unknown key; valid keys are: {', '.join(model.model_fields)}")
        else:
            lines.append(f"{key}: {err['msg']}, got {err.get('input')!r}")
    return "; ".join(lines)


@dataclass
class PipelineResult:
    """What one run produced.

    ``accuracy`` is the KnnClassifier's top-1 identity accuracy over the queries with a known identity
    (``scored_queries`` of them; NaN when there are none). ``query_labels`` holds ``None`` for the
    queries whose identity is unknown.
    """

    records: list[MatchRecord]
    predictions: np.ndarray
    query_labels: np.ndarray
    accuracy: float
    similarity: np.ndarray
    run_name: str
    out_dir: Path
    review_page: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    scored_queries: int = -1


def read_metadata(csv_path: str | Path) -> pd.DataFrame:
    """The metadata table, checked for the columns wildlife-tools needs."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InvalidInputError(f"metadata CSV {str(csv_path)!r} does not exist; pass --metadata with the CSV path")
    try:
        # identities, ids and paths are text: "007" stays "007", and an empty cell in a numeric
        # identity column does not turn the other identities into floats ("1.0")
        metadata = pd.read_csv(csv_path, index_col=False, dtype={"identity": str, "image_id": str, "path": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InvalidInputError(f"metadata CSV {str(csv_path)!r} cannot be parsed: {exc}") from None
    missing = [c for c in ("identity", "path") if c not in metadata.columns]
    if missing:
        raise InvalidInputError(
            f"metadata CSV {str(csv_path)!r} lacks column(s) {missing}; wildlife-tools needs "
            f"'image_id', 'identity' and 'path' (found {list(metadata.columns)})"
        )
    if len(metadata) < 2:
        raise InvalidInputError(
            f"metadata CSV {str(csv_path)!r} has {len(metadata)} row(s); matching needs at least 2 images"
        )
    return metadata


def split_metadata(metadata: pd.DataFrame, data: DataSettings) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(query rows, database rows, split?) — without a split column both are the whole table."""
    if data.split_column not in metadata.columns:
        return metadata, metadata, False
    values = metadata[data.split_column].astype(str)
    query = metadata[values.isin(data.query_splits)]
    database = metadata[values.isin(data.database_splits)]
    if query.empty or database.empty:
        raise InvalidInputError(
            f"split column {data.split_column!r} has values {sorted(values.unique())}; queries need one of "
            f"{data.query_splits} and the database one of {data.database_splits} (set data.query_splits / "
            "data.database_splits, or remove the column to let every image query the others)"
        )
    return query, database, True


def without_self_matches(similarity: Any, query_ids: list[str], database_ids: list[str]) -> np.ndarray:
    """A float64 copy of ``similarity`` with ``-inf`` where the query and database image are the same.

    With no split every image is in both sets; ``-inf`` keeps ``KnnClassifier`` from predicting an
    image's own label from itself (and the top-k never returns ``-inf`` entries).
    """
    matrix = np.array(similarity, dtype=np.float64)
    matrix[np.asarray(query_ids)[:, None] == np.asarray(database_ids)[None, :]] = -np.inf
    return matrix


def default_run_name(prefix: str = "run") -> str:
    """A run name no other process will pick (the store's: UTC time to the µs, pid, random suffix)."""
    from pairx_plugin.artifacts.store import new_run_name  # unique across processes (issue 11)

    return new_run_name(prefix)


def accuracy_over_known(predictions: np.ndarray, query_labels: list[str | None]) -> tuple[float, int]:
    """(top-1 accuracy, number of queries scored): queries with an unknown identity are left out."""
    scored = [(str(p), label) for p, label in zip(predictions.tolist(), query_labels) if label is not None]
    if not scored:
        return float("nan"), 0
    return float(np.mean([p == label for p, label in scored])), len(scored)


def classifier_labels(dataset: Any) -> np.ndarray:
    """Database labels for the KnnClassifier: strings, :data:`UNKNOWN_PREDICTION` for empty identities."""
    return np.asarray([UNKNOWN_PREDICTION if v is None else v for v in labels(dataset)], dtype=object)


def run_pipeline(
    images_dir: str | Path,
    metadata: str | Path | pd.DataFrame,
    settings: RunSettings,
    out_dir: str | Path,
    *,
    run_name: str | None = None,
    progress: bool = True,
    model: Any = None,
    review_path: str | Path | None = None,
    allow_outside_root: bool = False,
    explainer: Any = None,
) -> PipelineResult:
    """Run the pipeline and write artifacts, ``runs/<run_name>.jsonl`` and the review page.

    ``model`` (a ``ModelBundle``) skips loading ``settings.model``, e.g. to reuse one across runs;
    ``review_path`` places the page (default ``<out_dir>/review/<run_name>.html``);
    ``allow_outside_root`` accepts metadata paths that lead outside ``images_dir``.
    ``progress=False`` hides every progress bar, wildlife-tools' feature extraction included.
    """
    import torchvision.transforms as T
    from wildlife_tools.data import WildlifeDataset
    from wildlife_tools.features import DeepFeatures

    from pairx_plugin.artifacts.review import write_review_page
    from pairx_plugin.artifacts.store import ArtifactStore
    from pairx_plugin.models import load_model_spec

    timings: dict[str, float] = {}
    start = time.perf_counter()
    table = metadata if isinstance(metadata, pd.DataFrame) else read_metadata(metadata)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InvalidInputError(
            f"images directory {str(images_dir)!r} does not exist; "
            "pass --images with the folder the CSV paths are relative to"
        )
    img_load = settings.data.img_load
    if img_load == "auto":
        img_load = "bbox" if "bbox" in table.columns and table["bbox"].notna().all() else "full"
    check_image_paths(table, images_dir, allow_outside_root=allow_outside_root)
    query_rows, database_rows, _ = split_metadata(table, settings.data)

    if model is not None:
        bundle = model
    else:
        bundle = load_model_spec(settings.model, settings.weights, trust_remote_code=settings.trust_remote_code)
    transform = T.Compose(
        [
            T.Resize((bundle.input_size, bundle.input_size)),
            T.ToTensor(),
            T.Normalize(bundle.mean, bundle.std),
        ]
    )
    query_ds = WildlifeDataset(query_rows, str(images_dir), transform=transform, img_load=img_load)
    same_sets = query_rows is database_rows
    database_ds = (
        query_ds
        if same_sets
        else WildlifeDataset(database_rows, str(images_dir), transform=transform, img_load=img_load)
    )
    query_ids, database_ids = image_ids(query_ds), image_ids(database_ds)  # fails early on duplicate ids

    device = str(resolve_device(settings.pairx.device))  # the pipeline builds and places the model itself
    extractor = DeepFeatures(bundle.model, batch_size=settings.batch_size, num_workers=0, device=device)
    try:
        with host.quiet_progress(extractor, enabled=not progress):
            query_features = extractor(query_ds)
            database_features = query_features if same_sets else extractor(database_ds)
    except Exception as exc:
        raise InvalidInputError(
            f"wildlife-tools could not load the images listed in the metadata ({type(exc).__name__}: {exc}); "
            f"check that every 'path' exists under {str(images_dir)!r} and that bbox values are [x, y, w, h]"
        ) from exc
    timings["features_s"] = time.perf_counter() - start

    bundle.model.to(device)  # 1.x's DeepFeatures moves the model back to the CPU after extracting
    similarity = host.cosine_similarity(query_features, database_features)
    matrix = without_self_matches(similarity, query_ids, database_ids)

    run_name = run_name or default_run_name()
    out_dir = Path(out_dir)
    classifier = PairXKnnClassifier(
        k=1,
        database_labels=classifier_labels(database_ds),
        pairx=settings.pairx,
        query_dataset=query_ds,
        database_dataset=database_ds,
        extractor=extractor,
        store=ArtifactStore(out_dir),
        progress=progress,
        run_name=run_name,
    )
    classifier.explainer = explainer  # None: the hook in this process; pairx_ray.RayExplainer: Ray workers
    t_explain = time.perf_counter()
    predictions, records = classifier.predict_and_explain(matrix)
    timings["explain_s"] = time.perf_counter() - t_explain
    query_labels = labels(query_ds)
    predictions = np.asarray(predictions)
    accuracy, scored = accuracy_over_known(predictions, query_labels)
    review = write_review_page(out_dir, run_name, output=review_path) if settings.pairx.enabled else None
    timings["total_s"] = time.perf_counter() - start
    return PipelineResult(
        records,
        predictions,
        np.asarray(query_labels, dtype=object),
        accuracy,
        matrix,
        run_name,
        out_dir,
        review,
        timings,
        scored,
    )
