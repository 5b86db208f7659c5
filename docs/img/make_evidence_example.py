"""Regenerate docs/img/evidence_example.png (docs/metrics.md's worked example).

    .venv/bin/python docs/img/make_evidence_example.py

One query of the scene set (adapters/pairx_wildlife_tools/synthetic_scenes.py, seed 0) against the same
animal in front of another scene (top) and a different animal in front of the query's own scene
(bottom), explained with the built-in ImageNet EfficientNet-Lite0 at 224 px, default layer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pairx_plugin.engine.engine import PairX
from pairx_plugin.evidence.figure import evidence_figure
from pairx_plugin.evidence.foreground import as_mask
from pairx_plugin.evidence.scores import layer_evidence
from pairx_plugin.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    efficientnet_lite0_imagenet,
)
from pairx_wildlife_tools.synthetic_scenes import generate_scene_set

SIZE = 224


def main() -> None:
    torch.set_num_threads(1)
    scenes = generate_scene_set(Path(tempfile.mkdtemp()) / "scenes", seed=0)
    query = "animal_03_s0"
    same = next(
        i
        for i, s in scenes.sightings.items()
        if s.identity == "animal_03" and i != query and s.scene != scenes.sightings[query].scene
    )
    other = next(
        i for i, s in scenes.sightings.items() if s.identity != "animal_03" and s.scene == scenes.sightings[query].scene
    )
    model = efficientnet_lite0_imagenet().eval()

    def load(image_id: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        image = (
            Image.open(scenes.root / scenes.sightings[image_id].path)
            .convert("RGB")
            .resize((SIZE, SIZE), Image.BILINEAR)
        )
        display = np.asarray(image, np.uint8)
        tensor = (torch.from_numpy(display / 255.0).float() - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        mask = np.asarray(Image.fromarray(scenes.mask(image_id).astype(np.uint8) * 255).resize((SIZE, SIZE))) > 127
        return tensor.permute(2, 0, 1)[None].contiguous(), display, mask

    q_tensor, q_display, q_mask = load(query)
    engine = PairX(model, k_lines=20, k_colors=1)
    panels = []
    for candidate, title in ((same, "same animal, other scene:"), (other, "other animal, same scene:")):
        c_tensor, c_display, c_mask = load(candidate)
        pair = engine.explain_pair(q_tensor, c_tensor)
        layer = next(iter(pair.layers.values()))
        scores, geometry = layer_evidence(
            layer, (SIZE, SIZE), (SIZE, SIZE), as_mask(q_mask, (SIZE, SIZE)), as_mask(c_mask, (SIZE, SIZE)), "mask"
        )
        big = (2 * SIZE, 2 * SIZE)  # drawn at twice the input size so the lines are easy to follow
        figure = evidence_figure(
            np.asarray(Image.fromarray(q_display).resize(big)),
            np.asarray(Image.fromarray(c_display).resize(big)),
            geometry,
            [m.relevance for m in layer.matches],
            scores,
            (SIZE, SIZE),
            q_mask,
            c_mask,
            title=f"{title} cosine {pair.cosine:.3f}",
        )
        panels.append(figure)
    out = Image.new("RGB", (panels[0].width, sum(p.height for p in panels)), (255, 255, 255))
    top = 0
    for panel in panels:
        out.paste(panel, (0, top))
        top += panel.height
    path = Path(__file__).with_name("evidence_example.png")
    out.quantize(colors=96).save(path, optimize=True)  # a palette keeps the file small
    print(path)


if __name__ == "__main__":
    main()
