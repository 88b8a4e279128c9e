// The visualiser page: controls -> POST /api/render -> images. One render request in flight at a time;
// changes made meanwhile are sent as one request when it returns. All errors are shown in #message.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  compSeeds: [],      // one seed per latent (locals, then global)
  locked: [],
  busy: false, dirty: false, version: 0,
  lastImage: null,    // previous image data URL, for the "changed" view
  runMtimes: {}, curveKeys: null,
};

// -- messages -----------------------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the server does not answer (is visualizer.py still running?)");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function postJSON(path, data) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
}

// -- setup from /api/info -----------------------------------------------------------------------------

function fillSelect(select, items, value) {
  select.innerHTML = "";
  for (const [v, label] of items) {
    const o = document.createElement("option");
    o.value = v; o.textContent = label;
    select.appendChild(o);
  }
  if (value !== undefined && items.some(([v]) => String(v) === String(value))) select.value = value;
}

function modelShape(info) {
  return JSON.stringify([info.latents, info.num_ws, info.classes, info.layers]);
}

function setup(info) {
  const old = state.info;
  state.info = info;
  $("model-line").textContent = info.source + (info.snapshot ? ` · ${info.snapshot}` : "");
  $("model-form").hidden = !info.model_change;
  $("project-note").textContent = info.projector || "";
  $("run-panel").hidden = !info.run;
  if (!info.ready) { showMessage(info.notice || "no model loaded", "notice"); return; }
  if (old && old.ready && modelShape(old) === modelShape(info)) return;   // a new snapshot of the same model

  fillSelect($("noise"), info.noise_modes.map((m) => [m, m]), $("noise").value || "const");
  fillSelect($("size"), info.sizes.map((s) => [s, s ? `${s} px` : `native (${info.resolution} px)`]), $("size").value || 0);
  fillSelect($("class"), [...Array(info.classes).keys()].map((c) => [c, `class ${c}`]));
  $("class-label").hidden = !info.classes;
  const hasAtt = info.layers.length > 0;
  $("attention-controls").hidden = !hasAtt;
  $("overlay-figure").hidden = !hasAtt;
  fillSelect($("layer"), info.layers.map((l) => [l.index, `${l.index} (${l.resolution}×${l.resolution})`]),
             info.layers.length - 1);
  fillSelect($("view"), info.views.map((v) => [v, v.replace("_", " ")]));
  updateHeads();
  $("mix-lo").max = $("mix-hi").max = info.num_ws;
  $("mix-hi").value = Math.min(Number($("mix-hi").value) || 1, info.num_ws);
  $("mix-hint").textContent = `${info.num_ws} style layers (0 = coarsest).`;
  const seed = currentSeed();
  state.compSeeds = Array(info.latents).fill(seed === null ? 0 : seed);
  state.locked = Array(info.latents).fill(false);
  buildComponents(info);
}

function updateHeads() {
  const layer = state.info.layers[Number($("layer").value)];
  const heads = layer ? layer.heads : 1;
  fillSelect($("head"), [...Array(heads).keys()].map((h) => [h, `head ${h}`]), $("head").value);
}

function componentName(i, info) {
  return i < info.components ? `latent ${i}` : "global";
}

function buildComponents(info) {
  const box = $("components");
  box.innerHTML = "";
  for (let i = 0; i < info.latents; i++) {
    const color = i < info.components ? info.colors[i] : "#888888";
    const row = document.createElement("div");
    row.className = i < info.components ? "component" : "component global";
    row.dataset.index = i;
    row.style.setProperty("--color", color);
    row.dataset.color = color;
    row.innerHTML = `
      <img class="cmap" alt="">
      <div><span class="swatch"></span> <span class="title">${componentName(i, info)}</span> <span class="share"></span></div>
      <div>seed <input class="cseed" inputmode="numeric"> <label class="inline"><input type="checkbox" class="lock"> lock</label></div>
      <div><button type="button" class="resample">resample</button>
        <button type="button" class="copy">copy from</button> <input class="copy-seed" placeholder="seed" inputmode="numeric"></div>`;
    row.querySelector(".cseed").value = state.compSeeds[i];
    row.querySelector(".cseed").addEventListener("change", (e) => setComponent(i, e.target.value));
    row.querySelector(".lock").addEventListener("change", (e) => { state.locked[i] = e.target.checked; });
    row.querySelector(".resample").addEventListener("click", () => setComponent(i, randomSeed()));
    row.querySelector(".copy").addEventListener("click", () => setComponent(i, row.querySelector(".copy-seed").value));
    box.appendChild(row);
  }
}

// -- seeds --------------------------------------------------------------------------------------------

function randomSeed() {
  return Math.floor(Math.random() * 4294967295);
}

function parseSeed(text) {
  text = String(text).trim();
  return /^\d+$/.test(text) && Number(text) <= 4294967295 ? Number(text) : null;
}

function currentSeed() {
  return parseSeed($("seed").value);
}

function setComponent(i, value) {
  const seed = parseSeed(value);
  if (seed === null) {
    showMessage(`the seed of ${componentName(i, state.info)} must be an integer in 0..4294967295, got "${value}"`);
    return;
  }
  state.compSeeds[i] = seed;
  document.querySelector(`.component[data-index="${i}"] .cseed`).value = seed;
  requestRender();
}

function seedChanged() {
  const seed = currentSeed();
  if (seed !== null) {
    state.compSeeds = state.compSeeds.map((s, i) => (state.locked[i] ? s : seed));
    document.querySelectorAll(".component").forEach((row, i) => { row.querySelector(".cseed").value = state.compSeeds[i]; });
  }
  requestRender();      // a bad seed is sent as typed: the server's message explains it
}

function stepSeed(delta) {
  $("seed").value = Math.max(0, (currentSeed() || 0) + delta);
  seedChanged();
}

// -- rendering ----------------------------------------------------------------------------------------

function renderRequest() {
  const seed = currentSeed();
  return {
    seed: seed === null ? $("seed").value : seed,
    psi: Number($("psi").value), noise: $("noise").value, size: Number($("size").value),
    class: state.info.classes ? Number($("class").value) : null,
    component_seeds: seed === null ? [] : state.compSeeds,
    mix_seed: $("mix-enable").checked ? $("mix-seed").value : null,
    mix_lo: Number($("mix-lo").value), mix_hi: Number($("mix-hi").value),
    layer: state.info.layers.length ? Number($("layer").value) : -1,
    head: Number($("head").value || 0), alpha: Number($("alpha").value),
  };
}

async function requestRender() {
  if (!state.info || !state.info.ready) return;
  if (state.busy) { state.dirty = true; return; }
  state.busy = true;
  $("status").textContent = "rendering…";
  try {
    show(await postJSON("/api/render", renderRequest()));
    showMessage("");
  } catch (e) {
    showMessage(e.message);
    $("status").textContent = "";
  } finally {
    state.busy = false;
    if (state.dirty) { state.dirty = false; requestRender(); }
  }
}

function show(r) {
  const img = $("image");
  if (state.lastImage) drawDiff(state.lastImage, r.image);
  state.lastImage = r.image;
  img.src = r.image;
  img.dataset.version = ++state.version;
  if (r.attention) {
    $("overlay").src = r.attention[$("view").value];
    $("overlay-caption").textContent = `attention: layer ${r.layer}, head ${$("head").value}, ${$("view").value.replace("_", " ")}`;
    document.querySelectorAll(".component").forEach((row, i) => {
      if (i < r.components.length) {
        row.querySelector(".cmap").src = r.components[i];
        row.querySelector(".share").textContent = `${(100 * r.shares[i]).toFixed(1)}%`;
      }
    });
  }
  $("status").textContent = `seed ${$("seed").value} · ${r.ms} ms` + (r.snapshot ? ` · ${r.snapshot}` : "");
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = reject;
    im.src = src;
  });
}

// Where the new image differs from the previous one: red on a dimmed copy of the new image.
async function drawDiff(before, after) {
  const [a, b] = await Promise.all([loadImage(before), loadImage(after)]);
  const canvas = $("diff");
  const w = b.naturalWidth, h = b.naturalHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;      // a new display size alone is no change
  ctx.drawImage(a, 0, 0, w, h);
  const pa = ctx.getImageData(0, 0, w, h).data;
  ctx.drawImage(b, 0, 0, w, h);
  const out = ctx.getImageData(0, 0, w, h);
  const pb = out.data;
  for (let i = 0; i < pb.length; i += 4) {
    const d = Math.min(255, 2 * (Math.abs(pa[i] - pb[i]) + Math.abs(pa[i + 1] - pb[i + 1]) + Math.abs(pa[i + 2] - pb[i + 2])));
    const gray = (pb[i] + pb[i + 1] + pb[i + 2]) / 9;
    pb[i] = Math.min(255, gray + d); pb[i + 1] = gray; pb[i + 2] = gray;
  }
  ctx.putImageData(out, 0, 0);
}

// -- run folder: curves and grids ---------------------------------------------------------------------

function defaultCurve(key) {
  return /^Loss\/(G|D)\/loss$/.test(key) || /^Metrics\//.test(key) || /fid|kid/i.test(key);
}

function drawCurve(canvas, xs, ys, title) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width = canvas.clientWidth || 340, h = canvas.height = 110;
  const pts = xs.map((x, i) => [x, ys[i]]).filter(([, y]) => y !== null);
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#333"; ctx.font = "11px sans-serif";
  ctx.fillText(title, 4, 12);
  if (!pts.length) return;
  const x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  const y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  ctx.fillText(`${y1.toPrecision(4)} … ${y0.toPrecision(4)} · kimg ${x0}–${x1}`, 4, h - 4);
  const px = (x) => 6 + (w - 12) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const py = (y) => 18 + (h - 38) * (y1 > y0 ? 1 - (y - y0) / (y1 - y0) : 0.5);
  ctx.strokeStyle = "#1565c0"; ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
  ctx.stroke();
  if (pts.length === 1) { ctx.fillStyle = "#1565c0"; ctx.fillRect(px(pts[0][0]) - 2, py(pts[0][1]) - 2, 4, 4); }
}

function showRun(run) {
  state.run = run;
  const keys = Object.keys(run.stats.series);
  if (state.curveKeys === null || keys.some((k) => !(k in state.curveKeys))) {
    const chosen = state.curveKeys || {};
    for (const k of keys) if (!(k in chosen)) chosen[k] = defaultCurve(k);
    state.curveKeys = chosen;
    const box = $("curve-keys");
    box.innerHTML = "";
    for (const k of keys) {
      const label = document.createElement("label");
      const box1 = document.createElement("input");
      box1.type = "checkbox";
      box1.checked = chosen[k];
      box1.addEventListener("change", (e) => { chosen[k] = e.target.checked; showRun(state.run); });
      label.append(box1, ` ${k}`);          // a key is text from stats.jsonl, never markup
      box.appendChild(label);
    }
  }
  const curves = $("curves");
  curves.innerHTML = "";
  for (const k of keys.filter((k) => state.curveKeys[k])) {
    const canvas = document.createElement("canvas");
    canvas.dataset.key = k;
    curves.appendChild(canvas);
    drawCurve(canvas, run.stats.kimg, run.stats.series[k], k);
  }
  if (!keys.length) curves.textContent = "no statistics yet";
  for (const name of ["fakes", "attention", "reals"]) {
    const g = run.grids[name];
    const img = $(`grid-${name}`);
    img.closest("figure").hidden = !g;
    if (g && state.runMtimes[name] !== g.mtime) {
      state.runMtimes[name] = g.mtime;
      img.src = `/api/run/grid/${name}?t=${g.mtime}`;
      if (name === "fakes") $("grid-fakes-caption").textContent = `latest samples (${g.file})`;
    }
  }
}

async function refreshRun() {
  if (!state.info || !state.info.run) return;
  try { showRun(await api("/api/run")); } catch (e) { showMessage(e.message); }
}

// -- polling, model loading, projection ---------------------------------------------------------------

async function poll() {
  try {
    const info = await api("/api/info");
    const changed = !state.info || info.snapshot !== state.info.snapshot || info.ready !== state.info.ready;
    if (changed) {
      setup(info);
      requestRender();
      refreshRun();
    } else if (info.notice && !$("message").textContent) {
      showMessage(info.notice, "notice");
    }
  } catch (e) {
    showMessage(e.message);
  }
}

async function loadModel(event) {
  event.preventDefault();
  const source = $("model-source").value;
  showMessage(`loading ${source}…`, "notice");
  try {
    state.info = null;
    setup({ ...(await postJSON("/api/model", { source })), model_change: true });
    showMessage("");
    requestRender();
    refreshRun();
  } catch (e) {
    showMessage(e.message);
    poll();            // the previous model stays: show it again
  }
}

async function project() {
  const file = $("upload").files[0];
  if (!file) { showMessage("choose an image file to project"); return; }
  $("project-status").textContent = "projecting…";
  try {
    const r = await api(`/api/project?steps=${encodeURIComponent($("steps").value)}`,
                        { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
    $("proj-target").src = r.target;
    $("proj-image").src = r.image;
    $("proj-seg").src = r.attention ? r.attention.hard_blend : "";
    $("project-status").textContent = `done in ${r.ms} ms`;
    showMessage("");
  } catch (e) {
    $("project-status").textContent = "";
    showMessage(e.message);
  }
}

function bind() {
  $("seed").addEventListener("change", seedChanged);
  $("seed-prev").addEventListener("click", () => stepSeed(-1));
  $("seed-next").addEventListener("click", () => stepSeed(1));
  $("seed-random").addEventListener("click", () => { $("seed").value = randomSeed(); seedChanged(); });
  $("psi").addEventListener("input", () => { $("psi-value").textContent = Number($("psi").value).toFixed(2); requestRender(); });
  $("alpha").addEventListener("input", () => { $("alpha-value").textContent = Number($("alpha").value).toFixed(2); requestRender(); });
  for (const id of ["noise", "size", "class", "head", "view", "mix-enable", "mix-seed", "mix-lo", "mix-hi"]) {
    $(id).addEventListener("change", requestRender);
  }
  $("layer").addEventListener("change", () => { updateHeads(); requestRender(); });
  $("model-form").addEventListener("submit", loadModel);
  $("project").addEventListener("click", project);
}

bind();
poll();
setInterval(poll, 3000);
setInterval(refreshRun, 5000);
