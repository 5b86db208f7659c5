#!/usr/bin/env bash
# Test the wildlife-tools adapter against the real wildlife-tools 1.x (a second host environment).
#
# PyPI only serves wildlife-tools 0.0.9, which the main environment has. This script builds a
# PYTHONPATH overlay that shadows it with the 1.0.3 wheel from ../shared/wheels (facts in
# ../shared/wheels/README.md): the wheel with --no-deps (it declares gluefactory from git, which no
# registry serves), kornia<=0.8.2 (0.8.3+ breaks its LoFTR import), lmdb and omegaconf, which the main
# environment lacks; everything else (torch, timm, transformers, wildlife-datasets, ...) comes from the
# main environment behind the overlay. gluefactory itself is replaced by placeholder modules so that
# wildlife_tools.features / .similarity import; only the SIFT/SuperPoint/LightGlue paths (which need
# gluefactory and downloads) are unusable, and the adapter does not use them.
#
# Usage: tests/run_wildlife_v1.sh [extra pytest args]
# Env:   PYTHON (default .venv/bin/python), PAIRX_WHEELS (default ../shared/wheels),
#        PAIRX_WT1_OVERLAY (default .venv-wt1, rebuilt when missing or incomplete).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WHEELS="${PAIRX_WHEELS:-$ROOT/../shared/wheels}"
OVERLAY="${PAIRX_WT1_OVERLAY:-$ROOT/.venv-wt1}"
WHEEL="$WHEELS/wildlife_tools-1.0.3-py3-none-any.whl"

if [ ! -f "$OVERLAY/.complete" ]; then
    [ -f "$WHEEL" ] || { echo "error: $WHEEL not found; set PAIRX_WHEELS to the folder holding it" >&2; exit 2; }
    rm -rf "$OVERLAY"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$OVERLAY" \
        "$WHEEL" "kornia<=0.8.2" lmdb omegaconf "antlr4-python3-runtime==4.9.*"
    # placeholders for gluefactory (imported at module level by features/local.py and the LightGlue matcher)
    mkdir -p "$OVERLAY/gluefactory/models/extractors" "$OVERLAY/gluefactory/models/utils"
    cat > "$OVERLAY/gluefactory/__init__.py" <<'PY'
"""Placeholder for glue-factory (test environment only): lets wildlife_tools.features import."""
PY
    cat > "$OVERLAY/gluefactory/models/__init__.py" <<'PY'
def get_model(name):
    raise RuntimeError("gluefactory is a placeholder in this test environment; install it from git to use " + repr(name))
PY
    : > "$OVERLAY/gluefactory/models/extractors/__init__.py"
    : > "$OVERLAY/gluefactory/models/utils/__init__.py"
    cat > "$OVERLAY/gluefactory/models/extractors/sift.py" <<'PY'
def filter_dog_point(*args, **kwargs):
    raise RuntimeError("gluefactory is a placeholder in this test environment")


def run_opencv_sift(*args, **kwargs):
    raise RuntimeError("gluefactory is a placeholder in this test environment")
PY
    cat > "$OVERLAY/gluefactory/models/utils/misc.py" <<'PY'
def pad_to_length(*args, **kwargs):
    raise RuntimeError("gluefactory is a placeholder in this test environment")
PY
    touch "$OVERLAY/.complete"
fi

export PYTHONPATH="$OVERLAY${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import sys, wildlife_tools.features, wildlife_tools.similarity
from pairx_wildlife_tools import host
print("wildlife-tools", host.version(), "(API", host.api_generation() + ") from", wildlife_tools.__file__)
sys.exit(0 if host.api_generation() == "1.x" else 1)'
cd "$ROOT"
exec "$PY" -m pytest -q -p no:cacheprovider tests/test_wildlife_v1_real.py tests/test_wildlife_run_inputs.py "$@"
