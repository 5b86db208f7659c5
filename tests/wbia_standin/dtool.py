"""Stand-in for ``wbia.dtool``: config classes, similarity requests and a tiny dependency cache.

Copied behaviour (contract section 1): ``Config(**cfgdict)`` silently drops keys it does not
declare; ``get_cfgstr()`` covers only declared parameters; ``Request.new`` builds
``parent_rowids`` as every ``(q, d)`` with ``q != d``; ``execute`` calls the table function with
parallel lists (one generator yield per pair, in order), then ``get_row_data``, then
``postprocess_execute(table, parent_rowids, rowids, result_list)``.
"""

from __future__ import annotations

import hashlib
import types


class ParamInfo:
    """``ut.ParamInfo(name, default, hideif=...)``."""

    def __init__(self, varname, default=None, hideif=None, type_=None, **kwargs):
        self.varname = varname
        self.default = default
        self.hideif = hideif


class Config:
    _param_info_list: list = []

    def __init__(self, **cfgdict):
        for info in self.get_param_info_list():
            setattr(self, info.varname, info.default)
        known = {info.varname for info in self.get_param_info_list()}
        for key, value in cfgdict.items():
            if key in known:  # [quirk] unknown keys are dropped without a word
                setattr(self, key, value)

    def get_param_info_list(self):
        return list(self._param_info_list)

    def parse_items(self):
        return [(info.varname, getattr(self, info.varname)) for info in self.get_param_info_list()]

    def keys(self):
        return [k for k, _ in self.parse_items()]

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key) if key in self.keys() else default

    def get_cfgstr(self):
        body = ",".join(f"{k}={v}" for k, v in self.parse_items())
        return f"{type(self).__name__}({body})"


class Table:
    """One registered depc table (function called on parallel lists, rows kept in memory)."""

    def __init__(self, depc, tablename, func, registration):
        self.depc = depc
        self.tablename = tablename
        self.func = func
        self.registration = registration
        self._rows: dict[int, tuple] = {}
        self._next = 1

    def get_rowid(self, parent_rowids, config=None):
        qaids = [p[0] for p in parent_rowids]
        daids = [p[1] for p in parent_rowids]
        results = list(self.func(self.depc, qaids, daids, config))
        if len(results) != len(parent_rowids):
            raise AssertionError(f"{self.tablename}: {len(results)} rows for {len(parent_rowids)} parents")
        rowids = []
        for row in results:
            self._rows[self._next] = row
            rowids.append(self._next)
            self._next += 1
        return rowids

    def get_row_data(self, rowids):
        return [self._rows[r] for r in rowids]

    def delete_rows(self, rowids):
        for r in rowids:
            self._rows.pop(r, None)

    def __len__(self):
        return len(self._rows)


class DependencyCache:
    """``depc_annot``: tables from ``register_preprocs['annot']`` applied in ``initialize()``."""

    def __init__(self, controller):
        self.controller = controller
        self.tables: dict[str, Table] = {}
        self.configclass_dict: dict[str, type] = {}
        self.requestclass_dict: dict[str, type] = {}

    def initialize(self):
        from .controller_inject import PREPROC_REGISTRATIONS

        for kind, reg, func in PREPROC_REGISTRATIONS:
            if kind != "annot":
                continue
            name = reg["tablename"]
            self.tables[name] = Table(self, name, func, reg)
            if reg.get("configclass") is not None:
                self.configclass_dict[name] = reg["configclass"]
            if reg.get("requestclass") is not None:
                self.requestclass_dict[name] = reg["requestclass"]

    def __getitem__(self, tablename):
        return self.tables[tablename]


class VsOneSimilarityRequest:
    _tablename: str | None = None
    _symmetric = False

    @classmethod
    def new(cls, depc, qaid_list, daid_list, cfgdict=None, tablename=None):
        tablename = tablename or cls._tablename
        configclass = depc.configclass_dict[tablename]
        request = cls()
        request.depc = depc
        request.tablename = tablename
        request.qaids = list(qaid_list)
        request.daids = list(daid_list)
        request.config = configclass(**(cfgdict or {}))
        request.params = dict(request.config.parse_items())
        request.qparams = types.SimpleNamespace(**request.params)
        request.parent_rowids = [(q, d) for q in request.qaids for d in request.daids if q != d]
        return request

    def get_cfgstr(self):
        return f"{self.tablename}:{self.config.get_cfgstr()}"

    def get_pipe_hashid(self):
        return hashlib.sha1(self.get_cfgstr().encode()).hexdigest()[:16]

    def execute(self, parent_rowids=None, use_cache=None, postprocess=True):
        parent_rowids = self.parent_rowids if parent_rowids is None else parent_rowids
        table = self.depc[self.tablename]
        rowids = table.get_rowid(parent_rowids, config=self)
        result_list = table.get_row_data(rowids)
        if postprocess and hasattr(self, "postprocess_execute"):
            return self.postprocess_execute(table, parent_rowids, rowids, result_list)
        return result_list
