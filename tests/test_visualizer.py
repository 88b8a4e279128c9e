"""visualizer.py: the HTTP API (bad input is a message, the server keeps serving), run folders, a real browser.

Needs the optional packages of requirements-vis.txt; the browser test also needs Debian's Chromium and its
chromedriver (apt-get install chromium chromium-driver). Each part skips with the reason when they are missing.
Set VIS_SCREENSHOT=path.png to keep a copy of the browser test's screenshot.
"""
from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

pytest.importorskip("starlette", reason="the visualiser's packages are not installed (requirements-vis.txt)")
pytest.importorskip("uvicorn", reason="the visualiser's packages are not installed (requirements-vis.txt)")

SNAPSHOT = "network-snapshot-{:06d}.safetensors"


# ---------------------------------------------------------------------------------------------------
# A tiny run folder and a server process.

def tiny_generator(seed: int = 0):
    from training.networks import Generator
    from training.networks.presets import build

    torch.manual_seed(seed)
    G = Generator(build("GANformer", 16, latent_size=32, components_num=4, channel_base=256, channel_max=32)[0])
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)                 # untrained strength is 0: make the noise mode visible
    return G


def write_snapshot(run: Path, kimg: int, seed: int = 0) -> Path:
    from training.checkpoint import save_checkpoint

    path = run / SNAPSHOT.format(kimg)
    save_checkpoint(path, {"G_ema": tiny_generator(seed)})
    return path


def tiny_run(run: Path, snapshot: bool = True) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "stats.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"kimg": i, "timestamp": 0.0, "Loss/G/loss": 2 / (i + 1), "Loss/D/loss": 0.4 + 0.1 * i,
                                "Progress/tick": i}) + "\n")
    Image.fromarray(np.full([32, 64, 3], 90, np.uint8)).save(run / "fakes-000000.png")
    if snapshot:
        write_snapshot(run, 0)
    return run


class Server:
    """`python visualizer.py --model MODEL --port 0` in a subprocess; the address from its first line."""

    def __init__(self, model: Path):
        self.proc = subprocess.Popen([sys.executable, str(REPO / "visualizer.py"), "--model", str(model), "--port", "0"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + 120
        self.url = None
        while self.url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("visualizer.py did not start:\n" + "".join(self.log))
            if line is None:
                raise AssertionError("visualizer.py exited:\n" + "".join(self.log))
            if line.startswith("serving "):
                self.url = line.split(" at ")[1].split()[0].rstrip("/")
        self.get("/api/info")               # answers once uvicorn runs

    def _pump(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    def request(self, path: str, data=None, content_type: str = "application/json") -> tuple[int, dict]:
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path: str) -> dict:
        status, body = self.request(path)
        assert status == 200, body
        return body

    def alive(self) -> bool:
        return self.proc.poll() is None and self.get("/api/info")["ready"] in (True, False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tiny_run(tmp_path_factory.mktemp("vis") / "run-000"))
    yield s
    s.stop()


def decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# HTTP API.

def test_render_matches_generate_and_controls_work(server, tmp_path) -> None:
    import generate

    info = server.get("/api/info")
    assert info["ready"] and info["latents"] == 5 and info["components"] == 4 and len(info["layers"]) == 5
    from training.visualize import palette
    assert info["colors"] == ["#%02x%02x%02x" % tuple(round(v * 255) for v in c) for c in palette(4).tolist()]

    def render(**kw) -> dict:
        status, body = server.request("/api/render", {"seed": 3, "psi": 0.7, **kw})
        assert status == 200, body
        return body

    base = render()
    generate.main(["--model", str(Path(info["source"])), "--seeds", "3", "--truncation-psi", "0.7",
                   "--output-dir", str(tmp_path)])
    assert np.array_equal(decode(base["image"]), np.asarray(Image.open(tmp_path / "seed000003.png")))
    assert set(base["attention"]) == {"hard", "soft", "hard_blend", "soft_blend"}
    assert len(base["components"]) == 4 and abs(sum(base["shares"]) - 1) < 1e-3
    assert decode(base["components"][0]).shape == (16, 16, 3)          # last layer: 16x16 maps
    assert np.array_equal(decode(render(component_seeds=[3] * 5)["image"]), decode(base["image"]))
    changed = render(component_seeds=[3, 9, 3, 3, 3])                   # one local latent from seed 9
    assert not np.array_equal(decode(changed["image"]), decode(base["image"]))
    # Every style layer from seed 5 is seed 5; an empty range is refused.
    all_from_5 = render(mix_seed=5, mix_lo=0, mix_hi=info["num_ws"])
    assert np.array_equal(decode(all_from_5["image"]), decode(render(seed=5)["image"]))
    part = render(mix_seed=5, mix_lo=0, mix_hi=2)
    assert not np.array_equal(decode(part["image"]), decode(base["image"]))
    assert decode(render(size=64)["image"]).shape == (64, 64, 3)
    assert render(layer=0, head=0)["layer"] == 0 and decode(render(layer=0)["components"][0]).shape == (4, 4, 3)
    assert not np.array_equal(decode(render(noise="random")["image"]), decode(base["image"]))
    assert np.array_equal(decode(render(noise="random")["image"]), decode(render(noise="random")["image"]))


@pytest.mark.parametrize("body, needle", [
    ({"seed": "abc"}, "seed must be an integer"),
    ({"seed": -4}, "seed must be in"),
    ({}, "seed is required"),
    ({"seed": 1, "psi": "x"}, "psi must be a number"),
    ({"seed": 1, "noise": "loud"}, "noise must be one of"),
    ({"seed": 1, "component_seeds": [1, 2]}, "5 latents"),
    ({"seed": 1, "component_seeds": [1, "z", 1, 1, 1]}, "component seed must be an integer"),
    ({"seed": 1, "layer": 9}, "layer must be in 0..4"),
    ({"seed": 1, "head": 3}, "head must be in 0..0"),
    ({"seed": 1, "mix_seed": 2, "mix_lo": 3, "mix_hi": 3}, "non-empty layer range"),
    ([1, 2], "JSON object"),
])
def test_bad_render_requests_are_messages(server, body, needle) -> None:
    status, answer = server.request("/api/render", body)
    assert status == 400 and needle in answer["error"], answer
    assert server.alive()


def test_bad_model_upload_and_body_are_messages(server) -> None:
    before = server.get("/api/info")
    status, answer = server.request("/api/model", {"source": "/nonexistent/model.safetensors"})
    assert status == 400 and "model not found" in answer["error"]
    status, answer = server.request("/api/render", b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]
    for data, needle in ((b"hello, not a picture", "not an image"), (b"", "empty")):
        status, answer = server.request("/api/project?steps=2", data, "application/octet-stream")
        assert status == 400 and needle in answer["error"], answer
    status, answer = server.request("/api/project?steps=zero", png_bytes(np.zeros([8, 8, 3], np.uint8)))
    assert status == 400 and "steps" in answer["error"]
    status, answer = server.request("/api/run/grid/secrets")
    assert status == 404
    assert server.get("/api/info")["source"] == before["source"] and server.alive()


def test_projection_or_its_message(server) -> None:
    from training.visualizer.projection import find_projector

    status, answer = server.request("/api/project?steps=2", png_bytes(np.full([40, 30, 3], 200, np.uint8)),
                                    "application/octet-stream")
    if find_projector()[0] is None:
        assert status == 400 and "projection is not available" in answer["error"]
        assert "projection is not available" in server.get("/api/info")["projector"]
    else:
        assert status == 200, answer
        assert decode(answer["target"]).shape == (16, 16, 3) and "hard_blend" in answer["attention"]
    assert server.alive()


def test_run_folder_curves_grid_and_following(tmp_path) -> None:
    run = tiny_run(tmp_path / "run-000", snapshot=False)
    s = Server(run)
    try:
        info = s.get("/api/info")
        assert info["run"] and not info["ready"] and "waiting for the first snapshot" in info["notice"]
        status, answer = s.request("/api/render", {"seed": 0})
        assert status == 400 and "waiting for the first snapshot" in answer["error"]
        summary = s.get("/api/run")
        assert summary["stats"]["kimg"] == [0, 1, 2, 3, 4, 5] and summary["grids"]["fakes"]["file"] == "fakes-000000.png"
        assert summary["stats"]["series"]["Loss/G/loss"][-1] == pytest.approx(2 / 6)
        with urllib.request.urlopen(s.url + "/api/run/grid/fakes", timeout=60) as r:
            assert Image.open(io.BytesIO(r.read())).size == (64, 32)
        images = []
        for kimg, seed in ((0, 0), (4, 1)):                          # a first snapshot, then a newer one
            write_snapshot(run, kimg, seed)
            deadline = time.monotonic() + 60
            while s.get("/api/info")["snapshot"] != SNAPSHOT.format(kimg):
                assert time.monotonic() < deadline, "the server did not follow the run folder"
                time.sleep(0.5)
            images.append(decode(s.request("/api/render", {"seed": 0})[1]["image"]))
        assert not np.array_equal(images[0], images[1])
    finally:
        s.stop()


def test_cli_errors_are_one_line(tmp_path) -> None:
    for argv, needle in ((["--model", str(tmp_path / "missing.safetensors")], "model not found"),
                         (["--model", str(tmp_path), "--port", "70000"], "--port must be in"),
                         (["--model", str(tmp_path)], "neither a reference model nor network snapshots")):
        port = [] if "--port" in argv else ["--port", "0"]
        proc = subprocess.run([sys.executable, str(REPO / "visualizer.py"), *argv, *port], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_read_stats_skips_partial_lines_and_thins(tmp_path) -> None:
    from training.visualizer.run_folder import latest_grid, read_stats

    with open(tmp_path / "stats.jsonl", "w") as f:
        for i in range(25):
            f.write(json.dumps({"kimg": i, "Loss/G/loss": float(i), "Metrics/fid": None if i % 2 else 100.0 - i}) + "\n")
        f.write('{"kimg": 25, "Loss/G/lo')                              # a line being written
    stats = read_stats(tmp_path, max_points=10)
    assert stats["kimg"][0] == 0 and stats["kimg"][-1] == 24 and len(stats["kimg"]) <= 11
    assert stats["series"]["Loss/G/loss"] == [float(k) for k in stats["kimg"]]
    assert stats["series"]["Metrics/fid"][0] == 100.0
    assert latest_grid(tmp_path, "fakes") is None and latest_grid(tmp_path, "reals") is None
    for name, t in (("fakes-000004.png", 1), ("fakes-000012.png", 2), ("fakes-000012.500.png", 2),
                    ("attention-000012.png", 3), ("fakes-notes.png", 4), ("reals.png", 0)):
        Image.fromarray(np.zeros([4, 4, 3], np.uint8)).save(tmp_path / name)
        os.utime(tmp_path / name, (t, t))
    assert latest_grid(tmp_path, "fakes").name == "fakes-000012.500.png"
    assert latest_grid(tmp_path, "attention").name == "attention-000012.png"
    assert latest_grid(tmp_path, "reals").name == "reals.png"


# ---------------------------------------------------------------------------------------------------
# A real browser: Debian's headless Chromium through its chromedriver.

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,1100")


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium", reason="selenium is not installed (requirements-vis.txt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium and chromedriver installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_page_in_a_real_browser(server, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    js = browser.execute_script

    def version() -> int:
        return int(browser.find_element(By.ID, "image").get_attribute("data-version"))

    def rendered_after(v: int) -> str:
        wait.until(lambda d: version() > v and not js("return typeof state === 'undefined' || state.busy"))
        return browser.find_element(By.ID, "image").get_attribute("src")

    def type_seed(element, text: str) -> None:
        element.clear()
        element.send_keys(text, Keys.TAB)                    # leaving the field commits it ('change')

    browser.get(server.url + "/")
    first = rendered_after(0)
    assert first.startswith("data:image/png;base64,")
    colors = [row.get_attribute("data-color") for row in browser.find_elements(By.CSS_SELECTOR, ".component")]
    assert colors[:4] == server.get("/api/info")["colors"] and len(colors) == 5

    v = version()
    type_seed(browser.find_element(By.ID, "seed"), "7")
    after_seed = rendered_after(v)
    assert after_seed != first
    seeds = [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, ".cseed")]
    assert seeds == ["7"] * 5

    row = browser.find_elements(By.CSS_SELECTOR, ".component")[1]
    v = version()
    row.find_element(By.CSS_SELECTOR, ".resample").click()
    after_component = rendered_after(v)
    assert after_component != after_seed
    resampled = row.find_element(By.CSS_SELECTOR, ".cseed").get_attribute("value")
    assert resampled != "7"
    row.find_element(By.CSS_SELECTOR, ".lock").click()          # locked: survives the next seed change
    v = version()
    type_seed(browser.find_element(By.ID, "seed"), "8")
    rendered_after(v)
    seeds = [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, ".cseed")]
    assert seeds == ["8", resampled, "8", "8", "8"]

    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed() and overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert js("return document.getElementById('overlay').naturalWidth") == 16
    assert js("return [...document.querySelectorAll('.cmap')].filter(i => i.naturalWidth > 0).length") == 4
    wait.until(lambda d: js("return document.getElementById('diff').width") == 16)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves canvas")
               and js("return document.getElementById('grid-fakes').naturalWidth") == 64)

    type_seed(browser.find_element(By.ID, "seed"), "abc")
    message = browser.find_element(By.ID, "message")
    wait.until(lambda d: message.is_displayed() and "seed must be an integer" in message.text)
    v = version()
    type_seed(browser.find_element(By.ID, "seed"), "11")
    rendered_after(v)
    wait.until(lambda d: not message.is_displayed())
    v = version()
    js("document.getElementById('size').value = '256'; document.getElementById('size').dispatchEvent(new Event('change'))")
    rendered_after(v)
    assert js("return document.getElementById('image').naturalWidth") == 256

    fake = tmp_path / "holiday.png"
    fake.write_text("this is text, not a picture")
    browser.find_element(By.ID, "upload").send_keys(str(fake))
    browser.find_element(By.ID, "project").click()
    wait.until(lambda d: message.is_displayed() and "not an image" in message.text)
    v = version()
    type_seed(browser.find_element(By.ID, "seed"), "12")          # the page and the server carry on
    rendered_after(v)
    wait.until(lambda d: not message.is_displayed())
    from training.visualizer.projection import find_projector
    if find_projector()[0] is not None:                           # projector.py present: project a picture
        picture = tmp_path / "picture.png"
        ramp = np.linspace(0, 255, 48, dtype=np.uint8)
        Image.fromarray(np.stack([np.tile(ramp, (48, 1)), np.tile(ramp[:, None], (1, 48)),
                                  np.full([48, 48], 128, np.uint8)], -1)).save(picture)
        browser.find_element(By.ID, "steps").clear()
        browser.find_element(By.ID, "steps").send_keys("5")
        browser.find_element(By.ID, "upload").send_keys(str(picture))
        browser.find_element(By.ID, "project").click()
        wait.until(lambda d: js("return document.getElementById('proj-seg').naturalWidth") == 16)
        assert not message.is_displayed()

    shot = tmp_path / "visualizer.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 1000
    if os.environ.get("VIS_SCREENSHOT"):
        shutil.copy(shot, os.environ["VIS_SCREENSHOT"])
    assert server.alive()
