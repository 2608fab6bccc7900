"""Attention blocks for the generator (``ModelConfig.eca_*``, ``cbam_*``,
``spatial_decoder``).

Each block maps features (B, C, H, W) to features of the same shape, reweighted by a
gate in (0, 1):

* :class:`ECA` (efficient channel attention, Wang et al. 2020): per-channel gate from a
  1-D convolution over the globally averaged channels; kernel size
  ``|log2(C) / 2 + 1/2|`` rounded up to odd.
* :class:`ChannelAttention` (CBAM's channel half, Woo et al. 2018): per-channel gate from a
  shared two-layer MLP (reduction 16) over average- and max-pooled channels.
* :class:`SpatialAttention` (CBAM's spatial half): per-pixel gate from a ``k x k``
  convolution over the channel mean and maximum.
* :class:`CBAM`: channel then spatial attention (kernel 7).

The ``*_attention`` factories return ``nn.Identity`` (no parameters, so the state dict
of a model without attention is unchanged) when the switches are off.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ptychopinn.config import ModelConfig

__all__ = [
    "CBAM",
    "ECA",
    "ChannelAttention",
    "SpatialAttention",
    "bottleneck_attention",
    "decoder_attention",
    "encoder_attention",
]

#: CBAM's MLP reduction ratio and its spatial kernel (pixels), as in the paper.
CBAM_REDUCTION = 16
CBAM_SPATIAL_KERNEL = 7


class ECA(nn.Module):
    """Efficient channel attention: channel gate from a 1-D conv over pooled channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = int(abs(math.log2(channels) / 2 + 0.5))
        k = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C)
        gate = torch.sigmoid(self.conv(pooled)).squeeze(1)  # (B, C)
        return x * gate[:, :, None, None]


class ChannelAttention(nn.Module):
    """CBAM channel gate: shared MLP over average- and max-pooled channels."""

    def __init__(self, channels: int, reduction: int = CBAM_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))
        return x * gate[:, :, None, None]


class SpatialAttention(nn.Module):
    """Pixel gate from a ``kernel_px`` x ``kernel_px`` conv over channel mean and max."""

    def __init__(self, kernel_px: int = CBAM_SPATIAL_KERNEL) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_px, padding=kernel_px // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(stats))


class CBAM(nn.Module):
    """Convolutional block attention module: channel gate, then spatial gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


def _chain(blocks: list[nn.Module]) -> nn.Module:
    if not blocks:
        return nn.Identity()
    return blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)


def encoder_attention(channels: int, model_config: ModelConfig) -> nn.Module:
    """After an encoder level: ECA and/or CBAM."""
    blocks: list[nn.Module] = []
    if model_config.eca_encoder:
        blocks.append(ECA(channels))
    if model_config.cbam_encoder:
        blocks.append(CBAM(channels))
    return _chain(blocks)


def bottleneck_attention(channels: int, model_config: ModelConfig) -> nn.Module:
    """After the bottleneck: CBAM."""
    return CBAM(channels) if model_config.cbam_bottleneck else nn.Identity()


def decoder_attention(channels: int, model_config: ModelConfig) -> nn.Module:
    """After a decoder level: ECA, CBAM and/or spatial attention (kernel
    ``decoder_spatial_kernel``)."""
    blocks: list[nn.Module] = []
    if model_config.eca_decoder:
        blocks.append(ECA(channels))
    if model_config.cbam_decoder:
        blocks.append(CBAM(channels))
    if model_config.spatial_decoder:
        blocks.append(SpatialAttention(model_config.decoder_spatial_kernel))
    return _chain(blocks)
