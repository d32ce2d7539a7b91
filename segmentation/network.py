"""The lung/lesion network: a MONAI U-Net with two heads on one backbone.

Output channels (``OUT_CHANNELS`` = 4):

- 0..2: lung head, softmax over background / right lung / left lung;
- 3: lesion head, one sigmoid logit (pneumonia opacity of any density).

Why two heads rather than one 4-class softmax: a lesion voxel is also a lung voxel of a side. A single
softmax would have to choose between "left lung" and "lesion", so the lung mask would lose exactly the
consolidated lung that the scores need in their denominator, and lesion voxels would have to be
re-assigned to a side afterwards. With separate heads the lung head learns that consolidated lung is
lung (the teacher's mask of the clean scan is its label, lesions inserted or not) and the lesion head
learns opacity inside it; the backbone is shared, so the cost is one extra output channel.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.networks.nets import BasicUNet, UNet

log = logging.getLogger(__name__)

OUT_CHANNELS = 4
LUNG_CHANNELS = slice(0, 3)
LESION_CHANNEL = 3

DEFAULT_ARCH: dict[str, Any] = {
    "name": "unet",
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
}


def build_network(arch: dict[str, Any] | None = None) -> torch.nn.Module:
    """Build the network described by ``arch`` (see :data:`DEFAULT_ARCH`); 1 input, 4 output channels.

    ``name`` is ``unet`` (monai.networks.nets.UNet: ``channels``, ``strides``, ``num_res_units``) or
    ``basicunet`` (monai.networks.nets.BasicUNet: ``features``, six numbers).
    """
    a = dict(DEFAULT_ARCH)
    a.update(arch or {})
    name = str(a["name"]).lower()
    if name == "unet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=OUT_CHANNELS, channels=tuple(a["channels"]),
                    strides=tuple(a["strides"]), num_res_units=int(a["num_res_units"]), norm=a["norm"])
    if name == "basicunet":
        return BasicUNet(spatial_dims=3, in_channels=1, out_channels=OUT_CHANNELS,
                         features=tuple(a.get("features", (8, 16, 32, 64, 128, 8))))
    raise ValueError(f"unknown network name {name!r} (unet | basicunet)")


def downsampling_factor(arch: dict[str, Any] | None = None) -> int:
    """What every side of a window fed to the network of ``arch`` must be a multiple of: the product of the
    U-Net's ``strides`` (its skip connections concatenate halved and doubled sizes, which differ for other
    sides), 16 for ``basicunet`` (four poolings; the training's rule for its crops); 1 when ``strides`` are
    not whole numbers (``build_network`` refuses those)."""
    a = dict(DEFAULT_ARCH)
    a.update(arch or {})
    if str(a.get("name", "unet")).lower() == "basicunet":
        return 16
    try:
        f = 1
        for s in a.get("strides", DEFAULT_ARCH["strides"]):
            f *= int(s)
        return max(f, 1)
    except (TypeError, ValueError):
        return 1


def normalize_hu(hu: torch.Tensor, window: tuple[float, float] = (-1024.0, 400.0)) -> torch.Tensor:
    """HU to the network's input range: clip to ``window`` and scale to [0, 1]."""
    lo, hi = float(window[0]), float(window[1])
    return (hu.clamp(lo, hi) - lo) / (hi - lo)
