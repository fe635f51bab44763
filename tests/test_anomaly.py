"""Residuals, smoothing and scores against the paper's equations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F

from hfr.network.decoder import ContextInput, ConvBlock, HierarchicalDecoder, upsample2x_nearest
from hfr.scoring import maps as anomaly


def test_residual_is_half_squared_distance_of_unit_vectors() -> None:
    f, d = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    expected = 0.5 * ((f / f.norm(dim=1, keepdim=True) - d / d.norm(dim=1, keepdim=True)) ** 2).sum(
        1
    )
    (residual,) = anomaly.residual_maps([f], [d])
    torch.testing.assert_close(residual, expected, rtol=1e-5, atol=1e-6)


def test_identical_features_give_zero_residual_and_loss() -> None:
    f = torch.randn(3, 8, 6, 6)
    residuals = anomaly.residual_maps([f, f], [f.clone(), f.clone()])
    assert float(anomaly.reconstruction_loss(residuals)) == pytest.approx(0.0, abs=1e-6)


def test_hard_term_averages_only_the_hardest_pixels_of_each_level() -> None:
    fine = torch.arange(16.0).reshape(2, 2, 4)  # 16 pixels over 2 images: values 0..15
    coarse = torch.tensor([[[1.0, 9.0]], [[5.0, 3.0]]])  # 4 pixels
    levels = [fine, coarse]
    assert float(anomaly.reconstruction_loss(levels)) == pytest.approx((7.5 + 4.5) / 2)
    # only the hard term: a quarter is the 4 hardest of the fine level (12..15), 1 of the coarse
    hard_only = anomaly.reconstruction_loss(levels, hard_fraction=0.25, hard_weight=1.0)
    assert float(hard_only) == pytest.approx((13.5 + 9.0) / 2)
    # never fewer than one pixel per level
    hardest = anomaly.reconstruction_loss(levels, hard_fraction=1e-6, hard_weight=1.0)
    assert float(hardest) == pytest.approx((15.0 + 9.0) / 2)
    half = anomaly.reconstruction_loss(levels, hard_fraction=0.25, hard_weight=0.5)
    assert float(half) == pytest.approx(((7.5 + 13.5) / 2 + (4.5 + 9.0) / 2) / 2)


def test_hard_term_gradient_reaches_the_hardest_pixels_more() -> None:
    level = torch.tensor([[[0.1, 0.9], [0.4, 0.2]]], requires_grad=True)
    anomaly.reconstruction_loss([level], hard_fraction=0.5, hard_weight=0.5).backward()
    # 0.5 x 1/4 for every pixel, plus 0.5 x 1/2 for the two hardest (0.9 and 0.4)
    torch.testing.assert_close(level.grad, torch.tensor([[[0.125, 0.375], [0.375, 0.125]]]))


@pytest.mark.parametrize(("sigma", "size"), [(4.0, 64), (4.0, 7), (1.5, 33), (0.0, 10)])
def test_gaussian_matrix_matches_scipy(sigma: float, size: int) -> None:
    signal = np.random.default_rng(0).random(size)
    ours = anomaly.gaussian_matrix(size, sigma) @ signal
    reference = gaussian_filter(signal, sigma, mode="reflect") if sigma else signal
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_anomaly_map_equals_resize_sum_and_scipy_smoothing() -> None:
    levels = [torch.rand(2, 32, 24), torch.rand(2, 16, 12), torch.rand(2, 8, 6)]
    ours = anomaly.anomaly_map(levels, (128, 96), sigma=4.0).numpy()
    summed = sum(
        F.interpolate(level[:, None], size=(128, 96), mode="bilinear", align_corners=False)[:, 0]
        for level in levels
    ).numpy()
    for index in range(2):
        reference = gaussian_filter(summed[index].astype(np.float64), 4.0, mode="reflect")
        np.testing.assert_allclose(ours[index], reference, atol=2e-5)


def test_scores_are_map_maxima_and_sigma_zero_is_plain_resize() -> None:
    levels = [torch.zeros(1, 16, 16), torch.zeros(1, 8, 8), torch.zeros(1, 4, 4)]
    levels[2][0, 1, 1] = 1.0
    maps = anomaly.anomaly_map(levels, (64, 64), sigma=0.0)
    torch.testing.assert_close(maps, anomaly.resize_maps(levels[2], (64, 64)), atol=1e-6, rtol=0)
    assert float(anomaly.image_scores(maps)[0]) == pytest.approx(float(maps.max()))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_decoder_equals_the_papers_upsample_then_convolve_order(mode: str) -> None:
    torch.manual_seed(0)
    decoder = HierarchicalDecoder([16, 32, 64])
    getattr(decoder, mode)()
    f3 = torch.randn(3, 64, 4, 4)

    def paper_order(x: torch.Tensor) -> torch.Tensor:
        d3 = decoder.level3.project(decoder.level3.convs(x))
        d2 = decoder.level2.project(decoder.level2.convs(F.interpolate(d3, scale_factor=2.0)))
        return decoder.level1.project(decoder.level1.convs(F.interpolate(d2, scale_factor=2.0)))

    torch.testing.assert_close(decoder(f3)[0], paper_order(f3), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(upsample2x_nearest(f3), F.interpolate(f3, scale_factor=2.0))


def test_upsampling_copies_exactly_in_both_layouts() -> None:
    """Training's channels-last tensors take another path than contiguous ones: both copy each
    value to its four places exactly, and the channels-last result stays channels-last."""
    x = torch.randn(2, 5, 3, 4)
    expected = F.interpolate(x, scale_factor=2.0, mode="nearest")
    last = upsample2x_nearest(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(upsample2x_nearest(x), expected)
    assert torch.equal(last, expected)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()


@pytest.mark.parametrize(("width", "separable"), [(None, False), (6, False), (None, True)])
def test_context_decoder_never_sees_a_cell_through_its_own_context(
    width: int | None, separable: bool
) -> None:
    """The blind spot: changing f3 at one cell leaves that cell's context features unchanged
    and changes those of the cells around it; the fine levels are decoded from the context.
    A narrow decoder (``width`` under f3's 16 channels) first projects f3 cell by cell, and a
    separable one mixes the depthwise ring's channels cell by cell: both keep the blind spot."""
    torch.manual_seed(0)
    decoder = HierarchicalDecoder(
        [8, 12, 16], context=True, width=width, separable=separable
    ).eval()
    f3 = torch.randn(2, 16, 7, 7)
    changed = f3.clone()
    changed[:, :, 3, 3] += 5.0
    with torch.no_grad():
        before, after = decoder.context(f3), decoder.context(changed)
        moved = (after - before).abs().amax(dim=(0, 1))
        assert float(moved[3, 3]) == 0.0
        assert float(moved[1, 3]) > 0 and float(moved[3, 5]) > 0 and float(moved[2, 2]) > 0
        d1, d2, d3 = decoder(f3)
    assert [tuple(d.shape) for d in (d1, d2, d3)] == [
        (2, 8, 28, 28),
        (2, 12, 14, 14),
        (2, 16, 7, 7),
    ]
    torch.testing.assert_close(d3, decoder.level3(f3))
    paper = HierarchicalDecoder([8, 12, 16], width=width, separable=separable)
    assert set(decoder.state_dict()) > set(paper.state_dict())
    assert not any("ring" in key for key in decoder.state_dict())  # a constant, not a weight


def test_decoder_width_caps_the_blocks_and_a_wide_cap_changes_nothing() -> None:
    """Blocks are at most ``width`` channels wide; a cap at or above every level's channels
    builds the full-width decoder, tensor for tensor (so earlier weights files still load)."""
    channels = [16, 32, 96]
    full = HierarchicalDecoder(channels, context=True).state_dict()
    wide = HierarchicalDecoder(channels, context=True, width=96).state_dict()
    assert {k: v.shape for k, v in wide.items()} == {k: v.shape for k, v in full.items()}
    narrow = HierarchicalDecoder(channels, context=True, width=24)
    blocks = [m for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(min(conv.in_channels, conv.out_channels) for conv in blocks) <= 24
    assert sum(p.numel() for p in narrow.parameters()) < sum(v.numel() for v in full.values()) / 3
    outputs = narrow.eval()(torch.randn(2, 96, 4, 4))
    assert [tuple(d.shape[1:]) for d in outputs] == [(16, 16, 16), (32, 8, 8), (96, 4, 4)]


def test_separable_blocks_cost_less_and_keep_every_shape() -> None:
    """Separable blocks filter each channel alone (depthwise) and leave the mixing to 1x1
    convolutions: fewer weights, the same outputs' shapes, and the dense decoder's weight names
    for every tensor the two share."""
    channels = [16, 32, 96]
    dense = HierarchicalDecoder(channels, context=True)
    separable = HierarchicalDecoder(channels, context=True, separable=True)
    spatial = [
        m for m in separable.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1
    ]
    assert spatial and all(conv.groups == conv.in_channels == conv.out_channels for conv in spatial)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(separable) < count(dense) / 2
    outputs = separable.eval()(torch.randn(2, 96, 4, 4))
    assert [tuple(d.shape[1:]) for d in outputs] == [(16, 16, 16), (32, 8, 8), (96, 4, 4)]
    assert set(separable.state_dict()) - set(dense.state_dict()) == {"context.0.mix.weight"}


@pytest.mark.parametrize(("in_channels", "groups"), [(6, 1), (5, 5)])
def test_eval_mode_folds_batch_norm_into_the_convolution(in_channels: int, groups: int) -> None:
    """In eval mode a block is one convolution with its BatchNorm folded in: the same function
    as convolution, BatchNorm (running statistics) and LeakyReLU applied in turn, dense or
    depthwise (``groups``)."""
    torch.manual_seed(0)
    block = ConvBlock(in_channels, 5, 3, groups=groups)
    conv, norm, act = block
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = torch.randn(2, in_channels, 9, 9)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), act(norm(conv(x))), rtol=1e-5, atol=1e-5)


def test_the_separable_ring_folds_its_batch_norm_into_the_mix() -> None:
    """The separable ring in eval mode equals its depthwise ring, 1x1 mix, BatchNorm (running
    statistics) and LeakyReLU applied in turn."""
    torch.manual_seed(0)
    ring = ContextInput(6, separable=True)
    ring.norm.running_mean.normal_()
    ring.norm.running_var.uniform_(0.5, 2.0)
    ring.norm.weight.data.normal_()
    x = torch.randn(2, 6, 7, 7)
    ring.eval()
    with torch.no_grad():
        depthwise = F.conv2d(x, ring.conv.weight * ring.ring, padding=2, groups=6)
        expected = ring.act(ring.norm(ring.mix(depthwise)))
        torch.testing.assert_close(ring(x), expected, rtol=1e-5, atol=1e-5)


def test_operators_cached_under_inference_mode_still_serve_training() -> None:
    with torch.inference_mode():
        anomaly.anomaly_map([torch.rand(1, 12, 12)], (52, 52), sigma=2.5)
    level = torch.rand(1, 12, 12, requires_grad=True)
    anomaly.anomaly_map([level], (52, 52), sigma=2.5).sum().backward()
    assert level.grad is not None and level.grad.shape == (1, 12, 12)


@pytest.mark.parametrize(("in_size", "out_size"), [(16, 64), (7, 50), (64, 64), (32, 20)])
def test_upsample_matrix_matches_torch_interpolate(in_size: int, out_size: int) -> None:
    signal = torch.rand(1, 1, in_size, dtype=torch.float64)
    expected = F.interpolate(signal, size=out_size, mode="linear", align_corners=False)[0, 0]
    ours = anomaly.upsample_matrix(in_size, out_size) @ signal[0, 0].numpy()
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-12)
