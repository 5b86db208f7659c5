"""One lock per model object, shared by every caller that explains with that model.

Explaining temporarily changes a model (rule hooks, BatchNorm merges, ``requires_grad`` flags), so
two explanations of the same model must never overlap; explanations of *different* models may run in
parallel. The engine takes this lock around every pass; hosts (the hook, the service, the WBIA
adapter) use the same function instead of keeping locks of their own.
"""

from __future__ import annotations

import threading
import weakref

from torch import nn

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises explanations of ``model`` (created on first use)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = threading.RLock()
            _LOCKS[model] = lock
        return lock
