"""Checks on a metadata table before ``run`` reads any image: where the paths lead, which rows have labels.

Path policy (the same spirit as the explain service's URI policy): every ``path`` value is joined to
``--images``, resolved with symlinks followed, and must lie inside the resolved ``--images`` folder.
``../x.jpg``, an absolute path elsewhere, or a symlink that leads out are refused before anything is
read, naming the CSV row and the path; ``allow_outside_root`` (``--allow-outside-root``) lifts the rule
for users whose CSV deliberately points elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pairx_plugin.errors import InvalidInputError

from .images import is_unknown_label

#: first data line of a CSV read with a header: row index 0 is line 2
_CSV_LINE_OFFSET = 2


def _row_name(table: pd.DataFrame, position: int) -> str:
    label = f"row {position + _CSV_LINE_OFFSET} of the CSV"
    if "image_id" in table.columns:
        label += f" (image_id {str(table['image_id'].iloc[position])!r})"
    return label


def check_image_paths(table: pd.DataFrame, images_dir: Path, *, allow_outside_root: bool = False) -> list[Path]:
    """The resolved file of every row, in order; refuses paths outside ``images_dir`` and missing files.

    Raises :class:`InvalidInputError` naming the first offending row and its path.
    """
    root = images_dir.resolve()
    resolved: list[Path] = []
    missing: list[str] = []
    for position, value in enumerate(table["path"].tolist()):
        if is_unknown_label(value):
            raise InvalidInputError(
                f"{_row_name(table, position)} has an empty 'path'; every image needs its file path"
            )
        text = str(value)
        target = (images_dir / text).resolve()
        if not allow_outside_root and not target.is_relative_to(root):
            raise InvalidInputError(
                f"{_row_name(table, position)}: path {text!r} leads outside --images {str(images_dir)!r} "
                f"(to {str(target)!r}); paths must be relative to --images and stay inside it (symlinks "
                "included), or pass --allow-outside-root if the CSV deliberately points elsewhere"
            )
        if not target.is_file():
            missing.append(text)
        resolved.append(target)
    if missing:
        raise InvalidInputError(
            f"{len(missing)} image file(s) listed in the metadata do not exist under {str(images_dir)!r}, "
            f"e.g. {missing[:3]}; fix the 'path' column or --images"
        )
    return resolved
