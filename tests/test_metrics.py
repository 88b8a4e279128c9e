"""Metric math on synthetic features: FID, KID, precision/recall, IS, PPL, and the helpers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import fid, inception_score, kid, ppl, precision_recall
from metrics.metric_utils import FeatureStats, count_tag, crop_rows, quantize, stats_cache_path


def _features(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    mix = np.random.default_rng(1234).standard_normal((d, d)) / np.sqrt(d)  # one distribution per d
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ mix * scale + shift).astype(np.float32)


def _stats(x: np.ndarray, **kwargs) -> FeatureStats:
    st = FeatureStats(**kwargs)
    for chunk in np.array_split(x, 3):
        st.append(torch.from_numpy(chunk))
    return st


# ----------------------------------------------------------------------------------------------
# FID

def _fid_direct(x: np.ndarray, y: np.ndarray, ddof: int = 0) -> float:
    """Independent reference: the formula written out, covariance sum_i (x_i - mu)(x_i - mu)^T / (N - ddof)
    as explicit loops over rows, and scipy's matrix square root."""
    def mean_cov(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = v.astype(np.float64)
        mu = v.sum(0) / len(v)
        cov = sum(np.outer(row - mu, row - mu) for row in v) / (len(v) - ddof)
        return mu, cov
    (mu1, s1), (mu2, s2) = mean_cov(x), mean_cov(y)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
@pytest.mark.parametrize("n", [40, 300])
def test_fid_matches_direct_formula(method: str, n: int) -> None:
    x, y = _features(n, 24, 0), _features(n + 7, 24, 1, scale=1.3, shift=0.2)
    for kwargs in (dict(capture_mean_cov=True), dict(capture_all=True)):
        ours = fid.compute_fid(_stats(x, **kwargs), _stats(y, **kwargs), method=method)
        assert ours == pytest.approx(_fid_direct(x, y), rel=1e-6, abs=1e-6)


def test_fid_covariance_divides_by_n_not_n_minus_1() -> None:
    # As NVIDIA's FID code (and the papers' tables): the N - 1 (np.cov) variant must not pass.
    x, y = _features(40, 24, 0), _features(47, 24, 1, scale=1.3, shift=0.2)
    ours = fid.compute_fid(_stats(x, capture_mean_cov=True), _stats(y, capture_mean_cov=True))
    by_n, by_n_minus_1 = _fid_direct(x, y, ddof=0), _fid_direct(x, y, ddof=1)
    assert abs(by_n - by_n_minus_1) > 1e3 * abs(ours - by_n), (ours, by_n, by_n_minus_1)
    assert ours != pytest.approx(by_n_minus_1, rel=1e-3)


def test_fid_low_rank_methods_agree() -> None:
    x, y = _features(10, 32, 2), _features(12, 32, 3)  # rank-deficient covariances, as with few images
    s = [_stats(v, capture_all=True).get_mean_cov() for v in (x, y)]
    a = fid.frechet_distance(*s[0], *s[1], method="sqrtm")
    b = fid.frechet_distance(*s[0], *s[1], method="eigh")
    assert a == pytest.approx(b, rel=1e-4)


def test_fid_self_zero_and_monotonic_in_noise() -> None:
    x = _features(500, 16, 4)
    rng = np.random.default_rng(5)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    ref = _stats(x, capture_mean_cov=True)
    values = [fid.compute_fid(ref, _stats(x + s * noise, capture_mean_cov=True)) for s in (0.0, 0.1, 0.3, 1.0)]
    assert abs(values[0]) < 1e-6
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_feature_stats_mean_cov_and_roundtrip(tmp_path) -> None:
    x = _features(50, 8, 6)
    for kwargs in (dict(capture_mean_cov=True), dict(capture_all=True), dict(capture_all=True, capture_mean_cov=True)):
        st = _stats(x, **kwargs)
        mean, cov = st.get_mean_cov()
        np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False, bias=True), rtol=1e-8, atol=1e-12)
        st.save(tmp_path / "s.npz")
        back = FeatureStats.load(tmp_path / "s.npz")
        assert back.num_items == 50 and back.dim == 8
        np.testing.assert_array_equal(back.get_mean_cov()[1], cov)
    capped = FeatureStats(capture_all=True, max_items=20)
    capped.append(x[:15])
    capped.append(x[15:])
    assert capped.is_full() and capped.get_all().shape == (20, 8)


# ----------------------------------------------------------------------------------------------
# KID

def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Direct formula with explicit sums over index pairs."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (m * m)


def test_kid_unbiased_estimator_matches_direct_formula() -> None:
    x, y = _features(12, 5, 7).astype(np.float64), _features(12, 5, 8, shift=0.5).astype(np.float64)
    assert kid.mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    # One subset spanning both sets is the estimator on the full sets.
    assert kid.compute_kid(y, x, num_subsets=1, max_subset_size=12) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)


def test_kid_same_distribution_near_zero_and_grows() -> None:
    a, b = _features(400, 8, 9), _features(400, 8, 10)
    same = kid.compute_kid(a, b, num_subsets=20, max_subset_size=200)
    shifted = kid.compute_kid(a, b + 0.5, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.02 * shifted and shifted > 0


# ----------------------------------------------------------------------------------------------
# Precision / recall

def test_knn_radii_blocked_matches_brute_force() -> None:
    x = torch.from_numpy(_features(37, 4, 11))
    brute = torch.cdist(x, x).sort(dim=1).values[:, 3]
    torch.testing.assert_close(precision_recall.knn_radii(x, 3, row_batch_size=5, col_batch_size=7), brute)


def test_pr_identical_disjoint_nested() -> None:
    rng = np.random.default_rng(12)
    real = rng.uniform(0, 1, (400, 2)).astype(np.float32)
    assert precision_recall.compute_pr(real, real.copy()) == (1.0, 1.0)
    far = real + 100
    assert precision_recall.compute_pr(real, far) == (0.0, 0.0)
    # Fakes cover only the lower-left quarter of the reals' support: all plausible, low coverage.
    inner = rng.uniform(0, 0.5, (400, 2)).astype(np.float32)
    precision, recall = precision_recall.compute_pr(real, inner, row_batch_size=64, col_batch_size=50)
    assert precision > 0.97 and 0.15 < recall < 0.45, (precision, recall)
    # And the reverse: the reals are a subset of a wide fake support.
    precision, recall = precision_recall.compute_pr(inner, real)
    assert recall > 0.97 and precision < 0.45, (precision, recall)


# ----------------------------------------------------------------------------------------------
# Inception score

def test_inception_score_known_values() -> None:
    classes, per_class = 7, 30
    onehot = np.eye(classes)[np.tile(np.arange(classes), per_class)]  # every split balanced
    mean, std = inception_score.inception_score(onehot, num_splits=10)
    assert mean == pytest.approx(classes, rel=1e-12) and std == pytest.approx(0, abs=1e-9)
    uniform = np.full((100, 5), 0.2)
    assert inception_score.inception_score(uniform)[0] == pytest.approx(1.0)
    # Soft labels: p(y|x) puts 1-e on its class, e/(C-1) elsewhere; IS = exp(log C - H(row)).
    e = 0.3
    soft = onehot * (1 - e) + (1 - onehot) * e / (classes - 1)
    entropy = -(1 - e) * np.log(1 - e) - e * np.log(e / (classes - 1))
    assert inception_score.inception_score(soft)[0] == pytest.approx(np.exp(np.log(classes) - entropy), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# PPL with a linear toy generator and an identity "LPIPS"

class _LinearGen:
    z_shape = (2, 24)  # two components, as a GANformer latent

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z * 2.0

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(w.shape[0], 3, 4, 4) / 10


def test_ppl_linear_generator_known_value() -> None:
    # W space, endpoint sampling: d = |lpips(img(w0 + e (w1 - w0))) - lpips(img(w0))|^2 / e^2
    # = (127.5 * 2 / 10)^2 |z1 - z0|^2, whose mean is 650.25 * 2 * 48.
    value = ppl.compute_ppl(_LinearGen(), lambda img: img.flatten(1), num_samples=3000, space="w",
                            sampling="end", epsilon=1e-2, batch_size=500, progress=False)
    assert value == pytest.approx(650.25 * 2 * 48, rel=0.05)
    z_value = ppl.compute_ppl(_LinearGen(), lambda img: img.flatten(1), num_samples=50, space="z",
                              sampling="full", batch_size=25, progress=False)
    assert np.isfinite(z_value) and z_value > 0


def test_slerp_endpoints_and_norm() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(ppl.slerp(a, b, torch.zeros(4, 1)), a / a.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(ppl.slerp(a, b, torch.ones(4, 1)), b / b.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Helpers

def test_quantize_like_real_images() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])
    assert quantize(x).tolist() == [0, 0, 128, 255, 255, 255]
    assert quantize(torch.tensor([-0.5])).item() == 64  # 64.25 truncated, as the official code


def test_crop_rows_ratio() -> None:
    img = torch.zeros(1, 3, 64, 64)
    assert crop_rows(img, 0.5).shape == (1, 3, 32, 64)
    assert crop_rows(img, None).shape == crop_rows(img, 1.0).shape == (1, 3, 64, 64)


def test_cache_key_separates_inputs(tmp_path) -> None:
    base = dict(cache_key="abc", num_images=100, ratio=None, net_id="net", capture_all=False, root=tmp_path)
    changes = ({}, {"cache_key": "abd"}, {"num_images": 101}, {"ratio": 0.5}, {"net_id": "other"},
               {"capture_all": True})
    paths = {stats_cache_path(**dict(base, **change)) for change in changes}
    assert len(paths) == 6
    assert count_tag(50000) == "50k" and count_tag(500) == "500"
