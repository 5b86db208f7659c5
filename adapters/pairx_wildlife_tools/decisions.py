"""Hand curator decisions from the review page back to a wildlife-tools metadata table (pandas).

Record ids of a wildlife-tools run are the dataset's ``image_id`` values, so a decision names two
rows of the metadata frame. A query judged *same* as a candidate takes the candidate's identity
(:func:`pairx_plugin.decisions.plan_identity_updates`); the CLI equivalent on a CSV file is
``pairx-plugin decisions apply FILE --metadata metadata.csv --out curated.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from pairx_plugin.decisions import Decision, IdentityPlan, plan_identity_updates
from pairx_plugin.errors import InvalidInputError


def apply_decisions(
    metadata: pd.DataFrame,
    decisions: Iterable[Decision],
    *,
    id_column: str = "image_id",
    identity_column: str = "identity",
) -> tuple[pd.DataFrame, IdentityPlan]:
    """A copy of ``metadata`` with the decided identities (the input frame is not changed) and the plan."""
    for needed in (id_column, identity_column):
        if needed not in metadata.columns:
            raise InvalidInputError(
                f"metadata has no column {needed!r} (columns: {list(metadata.columns)}); "
                "pass id_column= / identity_column="
            )
    ids = metadata[id_column].astype(str)
    if ids.duplicated().any():
        raise InvalidInputError(f"metadata lists {id_column} {ids[ids.duplicated()].iloc[0]!r} twice")
    identities = {i: ("" if pd.isna(v) else str(v)) for i, v in zip(ids, metadata[identity_column])}
    plan = plan_identity_updates(decisions, identities)
    updated = metadata.copy()
    changed = ids.isin(list(plan.updates))
    updated[identity_column] = updated[identity_column].astype(object)
    updated.loc[changed, identity_column] = ids[changed].map(plan.updates)
    return updated, plan


__all__ = ["apply_decisions"]
