"""The HFR decoder: reconstructs the three encoder feature maps from the deepest one (eq. 3-4)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def folded_batch_norm(
    weight: torch.Tensor, norm: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one convolution equal to the bias-free convolution ``weight``
    followed by ``norm`` in eval mode (its running statistics)."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return weight * scale[:, None, None, None], norm.bias - norm.running_mean * scale


class ConvBlock(nn.Sequential):
    """Convolution, BatchNorm, LeakyReLU; in eval mode one convolution with the BatchNorm folded
    in (the same function, one pass over the activations fewer). ``groups=in_channels`` (with
    as many out channels) makes the convolution depthwise: each channel filtered alone."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output; folded in eval mode."""
        conv, norm, act = self
        if self.training:
            return act(norm(conv(x)))
        weight, bias = folded_batch_norm(conv.weight, norm)
        return act(F.conv2d(x, weight, bias, padding=conv.padding, groups=conv.groups))


class LevelDecoder(nn.Module):
    """Three conv blocks (1x1, 3x3, 1x1) and a 1x1 projection to one level's channels.

    The blocks are ``out_channels`` wide, or ``width`` where that is fewer; with ``separable``
    the 3x3 convolution is depthwise (its channels mixed by the 1x1 blocks around it), which
    makes the block's cost grow with its width rather than with its square.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int | None = None,
        *,
        separable: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden_width(out_channels, width)
        self.convs = nn.Sequential(
            ConvBlock(in_channels, hidden, 1),
            ConvBlock(hidden, hidden, 3, groups=hidden if separable else 1),
            ConvBlock(hidden, hidden, 1),
        )
        self.project = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor, *, upsample: bool = False) -> torch.Tensor:
        """Decode ``x``; with ``upsample``, as if ``x`` had first been upsampled x2 (nearest).

        The first block (1x1 conv, BatchNorm, LeakyReLU) acts on each pixel alone, so it commutes
        with nearest upsampling (BatchNorm statistics included: duplicating every pixel four times
        leaves mean and variance unchanged). It therefore runs before the upsampling, on a quarter
        of the pixels: identical results at a lower cost.
        """
        x = self.convs[0](x)
        if upsample:
            x = upsample2x_nearest(x)
        return self.project(self.convs[1:](x))


class ContextInput(nn.Module):
    """Describe each cell of ``f3`` by its neighbours two cells away only, never by itself.

    A 5x5 convolution whose centre 3x3 taps are held at zero (a ring), then BatchNorm and
    LeakyReLU. Followed by any 3x3 convolution, a cell's result still never depends on the cell's
    own features: it is predicted from its surroundings, so a defect cannot be copied through.
    With ``separable`` the ring is depthwise and a 1x1 convolution mixes its channels (still
    blind to the cell itself: the 1x1 sees only the ring's output there).
    """

    def __init__(self, channels: int, width: int | None = None, *, separable: bool = False) -> None:
        super().__init__()
        hidden = hidden_width(channels, width)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False) if hidden < channels else None
        groups = hidden if separable else 1
        self.conv = nn.Conv2d(hidden, hidden, 5, padding=2, groups=groups, bias=False)
        self.mix = nn.Conv2d(hidden, hidden, 1, bias=False) if separable else None
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        ring = torch.ones(1, 1, 5, 5)
        ring[..., 1:4, 1:4] = 0
        self.register_buffer("ring", ring, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ring features of every cell, shaped like ``x``; the BatchNorm folded into the
        convolution in eval mode."""
        if self.reduce is not None:
            x = self.reduce(x)
        ring = self.conv.weight * self.ring
        if self.mix is None:  # the dense ring: the BatchNorm folds into it
            weight, padding = ring, 2
        else:  # the depthwise ring, then the 1x1 mix: the BatchNorm folds into the mix
            x = F.conv2d(x, ring, padding=2, groups=self.conv.groups)
            weight, padding = self.mix.weight, 0
        if self.training:
            return self.act(self.norm(F.conv2d(x, weight, padding=padding)))
        weight, bias = folded_batch_norm(weight, self.norm)
        return self.act(F.conv2d(x, weight, bias, padding=padding))


class HierarchicalDecoder(nn.Module):
    """Decode ``f3`` into ``d3``, then ``d2`` and ``d1`` each from the previous one upsampled x2.

    Args:
        channels: the encoder's channels at stages 1, 2, 3, e.g. ``[64, 128, 256]`` for ResNet18.
        context: decode ``d2`` (and so ``d1``) from a blind-spot description of ``f3``
            (:class:`ContextInput`, then a level block) instead of from ``d3``: each cell's fine
            levels are predicted from the cells around it. ``False`` is the paper's decoder.
        width: the most channels in a block (:func:`hidden_width`), ``None`` for none.
        separable: depthwise spatial convolutions, each followed by 1x1 ones that mix the
            channels, instead of dense ones.

    Example:
        >>> decoder = HierarchicalDecoder([16, 24, 32], context=True)
        >>> [tuple(d.shape) for d in decoder(torch.zeros(2, 32, 4, 4))]
        [(2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]
    """

    def __init__(
        self,
        channels: list[int],
        *,
        context: bool = False,
        width: int | None = None,
        separable: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        source = hidden_width(c3, width) if context else c3
        self.level3 = LevelDecoder(c3, c3, width, separable=separable)
        self.level2 = LevelDecoder(source, c2, width, separable=separable)
        self.level1 = LevelDecoder(c2, c1, width, separable=separable)
        self.context = (
            nn.Sequential(
                ContextInput(c3, width, separable=separable),
                LevelDecoder(source, source, width, separable=separable),
            )
            if context
            else None
        )

    def forward(self, f3: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[d1, d2, d3]``, shaped like the encoder's ``[f1, f2, f3]``."""
        d3 = self.level3(f3)
        source = d3 if self.context is None else self.context(f3)
        d2 = self.level2(source, upsample=True)
        d1 = self.level1(d2, upsample=True)
        return [d1, d2, d3]


def hidden_width(channels: int, width: int | None) -> int:
    """The width of a block decoding ``channels``: ``channels``, or ``width`` where fewer."""
    return channels if width is None else min(channels, width)


def upsample2x_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling, equal to ``F.interpolate(mode="nearest")``.

    A channels-last ``x`` (training's layout) goes to ``F.interpolate``, which keeps that layout
    and is fastest there; a contiguous one to a broadcast copy, because ``F.interpolate``'s
    nearest kernel is slow on such tensors on CPU in torch 2.14. Both copy values exactly.
    """
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    batch, channels, height, width = x.shape
    expanded = x[:, :, :, None, :, None].expand(batch, channels, height, 2, width, 2)
    return expanded.reshape(batch, channels, 2 * height, 2 * width)
