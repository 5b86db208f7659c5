"""The package's import structure: layers of the data path, and torch kept out of light imports.

Layers (lowest first): a module may import from its own layer or any layer below, never above.
Checked over every ``import`` / ``from ... import`` statement of ``pairx_plugin/`` with ``ast``
(those inside functions and ``TYPE_CHECKING`` blocks included: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pairx_plugin

PACKAGE_DIR = Path(pairx_plugin.__file__).parent

#: module prefix -> layer; the longest matching prefix decides. Modules listed here that do not exist
#: (moved out of the core) are simply not checked.
LAYERS: dict[str, int] = {
    "pairx_plugin.errors": 0,
    "pairx_plugin.versions": 0,
    "pairx_plugin._lazy": 0,
    "pairx_plugin.records": 1,
    "pairx_plugin.images": 1,
    "pairx_plugin.config": 1,
    "pairx_plugin.pretrained": 1,
    "pairx_plugin.models": 1,
    "pairx_plugin.models_hub": 1,  # model specs: Hugging Face cache, timm folders, transformers
    "pairx_plugin.models_miewid": 1,  # model specs: the MiewID layout and its WBIA checkpoint loader
    "pairx_plugin.evidence.models": 1,  # pydantic models records/config embed (H6)
    "pairx_plugin.evidence.foreground": 1,  # numpy only; LoadedImage validates its foreground with it
    "pairx_plugin.engine": 2,
    "pairx_plugin.artifacts": 2,
    "pairx_plugin.evidence": 2,  # evidence score, evaluation, calibration, re-ranking (numpy, no torch)
    "pairx_plugin.decisions": 2,  # curator decisions beside a run's artifacts (the review page reads them)
    "pairx_plugin.reference_models": 2,  # benchmark/test models (leaving the core)
    "pairx_plugin.hook": 3,
    "pairx_plugin.service": 4,  # an application like the CLI (leaving the core)
    "pairx_plugin.cli": 4,
    "pairx_plugin.commands": 4,
}
TOP = max(LAYERS.values()) + 1  # the package facade (pairx_plugin/__init__) and modules not listed


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    root = PACKAGE_DIR.parent
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def _layer(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else TOP


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported pairx_plugin module) for every import statement of ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # "from . import colormaps" imports a module
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    ours = {(line, name) for line, name in found if name == "pairx_plugin" or name.startswith("pairx_plugin.")}
    return sorted(ours)


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = _module_name(path)
        own = _layer(module)
        if own == TOP:
            continue
        for line, imported in _imports(path):
            if _layer(imported) > own:
                problems.append(f"{module} (layer {own}) line {line} imports {imported} (layer {_layer(imported)})")
    return problems


def test_no_module_imports_from_a_layer_above_its_own():
    assert _violations() == []


def test_the_layer_check_sees_upward_imports(tmp_path, monkeypatch):
    """The checker itself: an upward import written into a copy of the tree is reported."""
    import shutil

    copy = tmp_path / "pairx_plugin"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "records.py", "a", encoding="utf-8") as handle:
        handle.write("\n\ndef _late():\n    from .hook import explain_matches\n    return explain_matches\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", copy)
    problems = _violations()
    assert len(problems) == 1 and "pairx_plugin.records (layer 1)" in problems[0] and "pairx_plugin.hook" in problems[0]


@pytest.mark.parametrize(
    "statement",
    [
        "import pairx_plugin.artifacts.schema",
        "import pairx_plugin",
        "from pairx_plugin.records import MatchRecord",
        "from pairx_plugin.config import PairXConfig, load_config",
        "from pairx_plugin.artifacts import SCHEMA_VERSION, ExplanationArtifact, ManifestEntry",
        "from pairx_plugin.artifacts.schema import json_schemas; json_schemas()",
        "from pairx_plugin import __version__, PairXError, MatchRecord",
    ],
)
def test_light_imports_never_import_torch(statement):
    code = f"{statement}\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_lazy_names_resolve_and_unknown_names_raise():
    import pairx_plugin.artifacts as artifacts

    assert pairx_plugin.PairX.__name__ == "PairX" and artifacts.read_manifest.__name__ == "read_manifest"
    assert "explain_matches" in dir(pairx_plugin) and "build_artifact" in dir(artifacts)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pairx_plugin.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        artifacts.nope  # noqa: B018


def test_the_core_imports_no_host_no_adapter_and_no_web_server():
    forbidden = ("wildlife_tools", "wbia", "pairx_wildlife_tools", "wbia_pairx", "ray")
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if _module_name(path).startswith(("pairx_plugin.service", "pairx_plugin.commands.serve")):
            continue  # the service moves to adapters/pairx_service (issue 10, H3)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            )
            for name in names:
                assert name.split(".")[0] not in (*forbidden, "fastapi", "uvicorn"), f"{path}: imports {name}"
