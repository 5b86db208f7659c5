"""A MiewID-like identification plugin for the stand-in (contract sections 2, 3 and 5).

The model is MiewIdNet-shaped: ``.backbone`` (timm efficientnet_lite0 with ImageNet weights,
classifier and global pool replaced by Identity, so ``backbone.blocks.N`` exist), ``.pooling``
(GeM) and ``.bn`` (BatchNorm1d); no ``.device`` attribute. Scoring copies MiewID: the chip goes in
as WBIA returns it (**BGR**, the production quirk), optional fliplr by viewpoint, Resize(h, w) with
aspect not kept (albumentations' default bilinear), ImageNet Normalize, fp32 embedding; the score
of a pair is ``(2 - d) / 2`` with ``d = 1 - cosine``. Not modelled: MiewID's kNN shortlist (``use_knn``
scores only the 50 nearest and gives the rest 0) and its PAIR-X re-ranking; every daid is scored.
"""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from torch import nn

from . import controller_inject
from .annotmatch import AnnotMatch
from .constants import ANNOTATION_TABLE
from .dtool import Config, ParamInfo, VsOneSimilarityRequest

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

MODEL_URL = "https://standin.invalid/miewid/miewid-lite0.bin"
CONFIG_URL = "https://standin.invalid/miewid/miewid-lite0.yaml"
# species -> model; two aliases share one model, unknown species fall back to 'default'
MODEL_CONFIG = {"sea_turtle": CONFIG_URL, "turtle_green": CONFIG_URL, "default": CONFIG_URL}
MODEL_BIN_CONFIG = {"sea_turtle": MODEL_URL, "turtle_green": MODEL_URL, "default": MODEL_URL}
IMAGE_SIZE = (224, 224)

LOAD_CALLS: list[str] = []


class GeM(nn.Module):
    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class MiewIdNetLike(nn.Module):
    def __init__(self, backbone: nn.Module, features: int):
        super().__init__()
        self.backbone = backbone
        self.pooling = GeM()
        self.bn = nn.BatchNorm1d(features)

    def extract_feat(self, x):
        return self.pooling(self.backbone(x)).flatten(1)

    def forward(self, x):
        return self.bn(self.extract_feat(x))


@functools.lru_cache(maxsize=1)
def _backbone_state():
    from pairx_plugin.pretrained import efficientnet_lite0_imagenet

    return copy.deepcopy(efficientnet_lite0_imagenet().state_dict())


def build_model() -> MiewIdNetLike:
    import timm

    backbone = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    backbone.load_state_dict(_backbone_state())
    backbone.global_pool = nn.Identity()
    backbone.classifier = nn.Identity()
    model = MiewIdNetLike(backbone, backbone.num_features)
    gen = torch.Generator().manual_seed(0)  # a non-trivial BatchNorm1d, as a trained head has
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.randn(backbone.num_features, generator=gen) * 0.05)
        model.bn.running_var.copy_(torch.rand(backbone.num_features, generator=gen) + 0.5)
    return model.eval()


def make_config(image_size=IMAGE_SIZE, fliplr=False, fliplr_view=()):
    return SimpleNamespace(
        data=SimpleNamespace(image_size=list(image_size), crop_bbox=False),
        test=SimpleNamespace(batch_size=4, fliplr=fliplr, fliplr_view=list(fliplr_view)),
        engine=SimpleNamespace(device="cpu"),
        model_params=SimpleNamespace(model_name="efficientnet_lite0"),
        use_gpu=False,
    )


CONFIG_OVERRIDES: dict = {}


def read_config_and_load_model(species):
    """``(model, config, (model_url, config_url))``; unknown species fall back to ``'default'``.

    Like MiewID it loads a fresh model on every call (the adapter must cache).
    """
    key = species if species in MODEL_CONFIG else "default"
    LOAD_CALLS.append(species)
    config = make_config(**CONFIG_OVERRIDES)
    return build_model(), config, (MODEL_BIN_CONFIG[key], MODEL_CONFIG[key])


def preprocess_chip(chip_bgr, image_size, flip):
    """MiewID's test transform on a WBIA chip: (fliplr), Resize(h, w), Normalize, to tensor."""
    img = chip_bgr  # [quirk] production embeds the BGR chip as is
    if flip:
        img = img[:, ::-1]
    h, w = image_size
    img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
    img = (img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def embed_aids(ibs, aids, model, config):
    chips = ibs.get_annot_chips(list(aids))
    viewpoints = ibs.get_annot_viewpoints(list(aids))
    tensors = [
        preprocess_chip(c, config.data.image_size, bool(config.test.fliplr) and vp in config.test.fliplr_view)
        for c, vp in zip(chips, viewpoints)
    ]
    with torch.no_grad():
        emb = model(torch.stack(tensors))
    return {int(a): e for a, e in zip(aids, emb)}


class MiewIdConfig(Config):
    _param_info_list = [
        ParamInfo("config_path", None),
        ParamInfo("use_knn", False, hideif=True),
        ParamInfo("pairx_rerank", False),
        ParamInfo("pairx_shortlist_k", 20),
        ParamInfo("pairx_alpha", 0.8),
        ParamInfo("pairx_layer_key", "backbone.blocks.5"),
        ParamInfo("pairx_sigmoid_k", 10.0),
        ParamInfo("pairx_sigmoid_x0", 0.5),
    ]


def wbia_plugin_miew_id(depc, qaid_list, daid_list, config):
    """The score table function: one yield per (qaid, daid) pair, in input order."""
    ibs = depc.controller
    cache = {}
    for qaid, daid in zip(qaid_list, daid_list):
        species = ibs.get_annot_species_texts(qaid)
        if species not in cache:
            model, cfg, _ = read_config_and_load_model(species)
            cache[species] = (model, cfg, {})
        model, cfg, embs = cache[species]
        missing = [a for a in (qaid, daid) if a not in embs]
        if missing:
            embs.update(embed_aids(ibs, missing, model, cfg))
        cos = torch.nn.functional.cosine_similarity(embs[qaid][None], embs[daid][None]).item()
        distance = 1.0 - cos
        yield ((2.0 - distance) / 2.0,)


class MiewIdRequest(VsOneSimilarityRequest):
    _tablename = "MiewId"
    _symmetric = False

    def postprocess_execute(self, table, parent_rowids, rowids, result_list):
        ibs = self.depc.controller
        qaid_list = [p[0] for p in parent_rowids]
        daid_list = [p[1] for p in parent_rowids]
        scores = [r[0] for r in result_list]
        cm_list = []
        for qaid in self.qaids:
            idx = [i for i, q in enumerate(qaid_list) if q == qaid]
            daids = np.array([daid_list[i] for i in idx], dtype=np.int64)
            annot_scores = np.array([scores[i] for i in idx], dtype=np.float64)
            cm = AnnotMatch()
            cm.qaid = qaid
            cm.qnid = ibs.get_annot_nids(qaid)
            cm.daid_list = daids
            cm.dnid_list = np.array(ibs.get_annot_nids(list(daids)), dtype=np.int64)
            cm._update_daid_index()
            cm._update_unique_nid_index()
            name_scores = np.array([annot_scores[g].max() for g in cm.name_groupxs])
            cm.set_cannonical_name_score(annot_scores, name_scores)
            species = ibs.get_annot_species_texts(qaid)
            _, _, (model_url, config_url) = read_config_and_load_model(species)
            cm.model_url, cm.config_url = model_url, config_url
            cm_list.append(cm)
        table.delete_rows(rowids)  # pairwise scores are never cached
        return cm_list

    def execute(self, *args, **kwargs):
        qaids = kwargs.pop("qaids", None)
        cm_list = super().execute(*args, **kwargs)
        if qaids is not None:
            cm_list = [cm for cm in cm_list if cm.qaid in qaids]
        return cm_list

    def render_single_result(self, cm, aid, **kwargs):
        """Without PAIR-X: the two BGR chips side by side (``vt.stack_image_list``)."""
        ibs = self.depc.controller
        q, d = ibs.get_annot_chips([cm.qaid, aid])
        h = max(q.shape[0], d.shape[0])
        pad = [np.pad(c, ((0, h - c.shape[0]), (0, 0), (0, 0))) for c in (q, d)]
        return np.concatenate(pad, axis=1)


_REGISTERED = False


def register():
    """Register the MiewId score table (what importing wbia_miew_id._plugin does)."""
    global _REGISTERED
    if _REGISTERED:
        return
    controller_inject.register_preprocs["annot"](
        tablename="MiewId",
        parents=[ANNOTATION_TABLE, ANNOTATION_TABLE],
        colnames=["score"],
        coltypes=[float],
        configclass=MiewIdConfig,
        requestclass=MiewIdRequest,
        chunksize=None,
    )(wbia_plugin_miew_id)
    _REGISTERED = True
