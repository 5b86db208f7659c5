"""Ray scale-out for pairx-plugin (the ``pairx-plugin[ray]`` extra): see docs/scale.md.

``explain_on_ray(records=..., images=..., model="builtin" | factory, config=..., workers=N)`` is the
Python entry point; ``pairx-plugin run ... --ray [auto|ADDRESS] --workers N`` uses it. The core
package never imports this one (nor Ray).
"""

from __future__ import annotations

from .runner import RayExplainer, connect, explain_on_ray, plan_groups
from .worker import CollectingStore, ExplainWorker, ModelSource, Outcome, build_model

__all__ = [
    "CollectingStore",
    "ExplainWorker",
    "ModelSource",
    "Outcome",
    "RayExplainer",
    "build_model",
    "connect",
    "explain_on_ray",
    "plan_groups",
]
