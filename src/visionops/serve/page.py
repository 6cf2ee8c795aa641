"""The page served at ``GET /``: the camera, several files, paste; the answer and its heatmap.

One self-contained HTML document (no external resources: it works offline). What it does:

- **Camera** (``getUserMedia``): one frame at a time, the next only after the answer to the
  last (never more than one request in flight, so nothing queues), at most 15 a second; a
  ``503`` doubles the gap between frames (at least the server's ``Retry-After``) and each
  answer halves it again, so the rate settles at what the server can take. The answer and
  the heatmap are drawn over the video.
- **Files**: several at once (picker, drop, or paste from the clipboard), sent as one
  request per ``max_files_per_request``; each answer shows its image at its own resolution.
- **Heatmap** (anomaly map, or a classifier's class activation map): the model-sized grey
  map is coloured on the page (anomaly: on the threshold's scale, mid-ramp at the threshold)
  and drawn over the image at the image's own resolution with smoothing, placed where the
  server's resize took the model's input from (centre crop or letterbox).
- **Models**: ``GET /models`` lists them; with several, a picker chooses which one answers
  (``/models/{name}/...``); a server without ``/models`` (404) is one model.
- **Drift**: ``/drift`` polled every few seconds: collecting, ok or drift with its strongest
  signal in words.
- An API key field appears when the server answers 401 (kept in ``localStorage``).

Everything is reachable by keyboard (native buttons, inputs and a picker; the drop zone
opens the file chooser with Enter or Space).
"""

from __future__ import annotations

__all__ = ["UPLOAD_PAGE"]

UPLOAD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>visionops</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 64rem; margin: 1.5rem auto;
         padding: 0 1rem; color: #1d1d1f; }
  h1 { font-size: 1.3rem; margin: 0; }
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4rem 1rem; }
  #model { color: #555; margin: 0; }
  button, select, input { font: inherit; }
  button { padding: .35rem .9rem; border-radius: 6px; border: 1px solid #888; background: #fff;
           cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  :focus-visible { outline: 3px solid #0a66c2; outline-offset: 2px; }
  .hidden { display: none !important; }
  .bar-row { display: flex; flex-wrap: wrap; align-items: center; gap: .6rem; margin: .8rem 0; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 17rem; gap: 1.2rem; }
  @media (max-width: 52rem) { main { grid-template-columns: 1fr; } }
  #stage { position: relative; background: #111; border-radius: 8px; overflow: hidden;
           max-width: 40rem; }
  #stage video, #stage canvas { display: block; width: 100%; height: auto; }
  #stage canvas { position: absolute; inset: 0; }
  #camanswer { position: absolute; left: .5rem; top: .5rem; padding: .2rem .6rem;
               background: rgba(0,0,0,.65); color: #fff; border-radius: 5px; font-weight: 600; }
  #camstats { color: #555; font-size: .85rem; font-variant-numeric: tabular-nums; }
  #drop { border: 2px dashed #999; border-radius: 10px; padding: 1.4rem 1rem;
          text-align: center; cursor: pointer; background: #fafafa; }
  #drop.over { border-color: #0a66c2; background: #eef5fc; }
  #status { margin: .8rem 0 .4rem; font-weight: 600; min-height: 1.4em; }
  #status.error { color: #b00020; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr));
           gap: 1rem; }
  .card { border: 1px solid #ddd; border-radius: 8px; padding: .5rem; }
  .card h3 { font-size: .85rem; margin: 0 0 .3rem; overflow-wrap: anywhere; color: #444; }
  .pic { position: relative; }
  .pic canvas { display: block; width: 100%; height: auto; }
  .pic canvas.heat { position: absolute; inset: 0; }
  .headline { font-weight: 600; margin: .3rem 0; }
  .row { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; font-size: .9rem; }
  .name { width: 7rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .meter { flex: 1; background: #e6e6e6; border-radius: 4px; height: .8rem; }
  .meter > span { display: block; height: 100%; background: #0a66c2; border-radius: 4px; }
  .num { width: 5.5rem; text-align: right; font-variant-numeric: tabular-nums; }
  #legend { font-size: .8rem; color: #555; }
  #ramp { display: inline-block; width: 9rem; height: .7rem; vertical-align: middle;
          border-radius: 3px; position: relative;
          background: linear-gradient(90deg, #000004, #57106e, #bc3754, #f98e09, #fcffa4); }
  #ramp i { position: absolute; left: 50%; top: -3px; bottom: -3px; border-left: 2px solid #fff; }
  aside section { border: 1px solid #ddd; border-radius: 8px; padding: .6rem .8rem;
                  margin-bottom: 1rem; }
  aside h2 { font-size: 1rem; margin: 0 0 .3rem; }
  #drift[data-state=ok] .badge { background: #1b7f3b; }
  #drift[data-state=drift] .badge { background: #b00020; }
  .badge { display: inline-block; color: #fff; background: #777; border-radius: 4px;
           padding: 0 .45rem; font-weight: 600; }
  #driftwhat { margin: .3rem 0 0; padding-left: 1.1rem; font-size: .9rem; }
  small { color: #666; }
</style>
</head>
<body>
<header>
  <h1>visionops</h1>
  <p id="model" role="status">loading model information…</p>
  <label id="pickbox" class="hidden">model <select id="modelpick"></select></label>
  <label id="key" class="hidden">API key
    <input id="apikey" type="password" autocomplete="off"></label>
</header>
<main>
<div>
  <div class="bar-row">
    <button id="camstart" type="button">Start camera</button>
    <button id="camstop" type="button" disabled>Stop camera</button>
    <label id="heatbox" class="hidden"><input id="heat" type="checkbox" checked>
      heatmap</label>
    <span id="legend" class="hidden"><span id="ramp"><i id="tick"></i></span>
      <span id="legendtext"></span></span>
  </div>
  <div id="stage" class="hidden">
    <video id="video" muted playsinline></video>
    <canvas id="camheat" class="heat"></canvas>
    <div id="camanswer" aria-live="polite"></div>
  </div>
  <p id="camstats" data-running="false" data-sent="0" data-answered="0" data-refused="0"
     data-interval="0" data-max-in-flight="0"></p>
  <div id="drop" tabindex="0" role="button"
       aria-label="Choose images: Enter or Space opens the file chooser">
    <strong>Drop images here</strong>, click to choose several, or paste one (Ctrl+V)
    <input id="file" type="file" accept="image/*" multiple hidden>
  </div>
  <div id="status" role="status" aria-live="polite"></div>
  <div id="cards"></div>
</div>
<aside>
  <section id="drift" data-state="unknown" aria-live="polite">
    <h2>Drift</h2>
    <span class="badge" id="driftbadge">…</span> <span id="drifttext"></span>
    <ul id="driftwhat"></ul>
  </section>
  <small>JSON API: <code>POST /predict</code> · <a href="docs">API docs</a> ·
  <a href="metadata">metadata</a> · <a href="metrics">metrics</a></small>
</aside>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const MIN_GAP_MS = 66, MAX_GAP_MS = 8000, DRIFT_EVERY_MS = 4000;
const RAMP = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const page = {models: null, name: null, meta: null};
const cam = {running: false, stream: null, inFlight: 0, maxInFlight: 0, gap: 0, sent: 0,
             answered: 0, refused: 0, times: []};

function base() {
  return page.name === null ? "" : "models/" + encodeURIComponent(page.name) + "/";
}
function headers(extra) {
  const key = $("apikey").value || localStorage.getItem("visionops-api-key") || "";
  return Object.assign(key ? {"X-API-Key": key} : {}, extra || {});
}
function needKey() {
  $("key").classList.remove("hidden");
  $("apikey").focus();
}
function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}
function sleep(ms) { return new Promise((done) => setTimeout(done, ms)); }

// ------------------------------------------------------------------ models and metadata
function heatmapKind() {
  const meta = page.meta;
  if (!meta) return null;
  if (meta.heatmap) return meta.heatmap.available ? meta.heatmap.kind : null;
  return meta.task === "anomaly" ? "anomaly_map" : null;
}

async function loadModels() {
  try {
    const response = await fetch("models", {headers: headers()});
    if (response.status === 401) { needKey(); return; }
    if (!response.ok) return;  // a one-model server (no /models)
    const data = await response.json();
    const list = Array.isArray(data) ? data : (data.models || []);
    page.models = list.map((m) => typeof m === "string" ? {name: m} : m);
    const chosen = page.models.find((m) => m.default) || page.models[0];
    page.name = chosen ? chosen.name : null;
    const pick = $("modelpick");
    pick.replaceChildren(...page.models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.name + (m.task ? " (" + m.task + ")" : "");
      return option;
    }));
    pick.value = page.name;
    $("pickbox").classList.toggle("hidden", page.models.length < 2);
  } catch (err) { /* the page still works with the default model */ }
}

async function loadMetadata() {
  const response = await fetch(base() + "metadata", {headers: headers()});
  if (response.status === 401) {
    needKey();
    $("model").textContent = "this server needs an API key";
    return;
  }
  const meta = await response.json();
  page.meta = meta;
  $("model").textContent = meta.task + " model " + meta.model_version + " · " +
    meta.input.size + " px · " + meta.labels.length + " " +
    (meta.task === "regression" ? "targets" : "labels");
  const kind = heatmapKind();
  $("heatbox").classList.toggle("hidden", !kind);
  $("legend").classList.toggle("hidden", !kind);
  $("tick").classList.toggle("hidden", kind !== "anomaly_map");
  $("legendtext").textContent = kind === "anomaly_map"
    ? "anomaly score; the mark is the threshold (" + Number(meta.thresholds).toPrecision(3) + ")"
    : kind ? "where the top class's evidence lies (" + meta.heatmap.detail + ")" : "";
  $("heat").title = kind ? "" : (meta.heatmap && meta.heatmap.detail) || "";
}

$("modelpick").addEventListener("change", async () => {
  page.name = $("modelpick").value;
  $("cards").replaceChildren();
  await loadMetadata();
  pollDrift();
});
$("apikey").addEventListener("change", async () => {
  localStorage.setItem("visionops-api-key", $("apikey").value);
  await loadModels();
  await loadMetadata();
});

// ------------------------------------------------------------------ predicting
function predictUrl() {
  const wants = heatmapKind() && $("heat").checked;
  return base() + "predict" + (wants ? "?heatmap=true" : "");
}

async function readError(response) {
  try { return (await response.json()).error.message; } catch (err) { return ""; }
}

function headlineOf(answer) {
  if (answer.label !== undefined) {
    return answer.label + " " + (answer.probability * 100).toFixed(1) + " %";
  }
  if (answer.labels) {
    return answer.labels.map((e) => e.label).join(", ") || "no label over its threshold";
  }
  if (answer.verdict) {
    return answer.verdict + " (score " + answer.score.toPrecision(3) + ", threshold " +
      answer.threshold.toPrecision(3) + ")";
  }
  if (answer.values) {
    return answer.values.map((v) => v.name + " " +
      (v.value === null ? "?" : v.value.toPrecision(4)) + (v.unit ? " " + v.unit : ""))
      .join(", ");
  }
  return "done";
}

function row(name, value, fraction) {
  const div = document.createElement("div");
  div.className = "row";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  label.title = name;
  const meter = document.createElement("span");
  meter.className = "meter";
  const fill = document.createElement("span");
  fill.style.width = Math.max(0, Math.min(1, fraction)) * 100 + "%";
  meter.appendChild(fill);
  const num = document.createElement("span");
  num.className = "num";
  num.textContent = value;
  div.append(label, meter, num);
  return div;
}

function rows(answer, task) {
  const out = [];
  if (task === "classification") {
    answer.top_k.forEach((e) =>
      out.push(row(e.label, (e.probability * 100).toFixed(1) + " %", e.probability)));
  } else if (task === "multilabel") {
    const chosen = new Set(answer.labels.map((e) => e.label));
    Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]).forEach(([name, p]) =>
      out.push(row((chosen.has(name) ? "✔ " : "") + name, (p * 100).toFixed(1) + " %", p)));
  } else if (task === "anomaly") {
    out.push(row(answer.verdict, answer.score.toPrecision(4),
                 Math.min(1, answer.score / (2 * answer.threshold || 1))));
  }
  return out;
}

// ------------------------------------------------------------------ the heatmap
function rampColour(level) {
  const x = Math.max(0, Math.min(1, level)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), t = x - i;
  return RAMP[i].map((c, k) => c + (RAMP[i + 1][k] - c) * t);
}

function loadImage(url) {
  return new Promise((done, fail) => {
    const image = new Image();
    image.onload = () => done(image);
    image.onerror = () => fail(new Error("cannot decode the heatmap"));
    image.src = url;
  });
}

// The rectangle of the full image that the model's square input was resized from.
function placement(width, height, resize) {
  if (resize === "letterbox") {
    const side = Math.max(width, height);
    return [(width - side) / 2, (height - side) / 2, side];
  }
  const side = Math.min(width, height);
  return [(width - side) / 2, (height - side) / 2, side];
}

async function drawHeatmap(canvas, width, height, heatmap, answer) {
  const grey = await loadImage("data:image/png;base64," + heatmap.png_base64);
  const small = document.createElement("canvas");
  small.width = heatmap.width;
  small.height = heatmap.height;
  const context = small.getContext("2d", {willReadFrequently: true});
  context.drawImage(grey, 0, 0);
  const pixels = context.getImageData(0, 0, small.width, small.height);
  const span = heatmap.max - heatmap.min;
  const anomaly = answer.threshold !== undefined && answer.score !== undefined;
  for (let i = 0; i < pixels.data.length; i += 4) {
    const value = heatmap.min + (pixels.data[i] / 255) * span;
    // Anomaly maps on the threshold's scale (mid-ramp at the threshold, brightest at twice
    // it); a class activation map is 0..1 already.
    const level = anomaly
      ? (answer.threshold > 0 ? value / (2 * answer.threshold) : pixels.data[i] / 255)
      : value;
    const [r, g, b] = rampColour(level);
    pixels.data[i] = r;
    pixels.data[i + 1] = g;
    pixels.data[i + 2] = b;
    pixels.data[i + 3] = Math.round(255 * (0.15 + 0.6 * Math.max(0, Math.min(1, level))));
  }
  context.putImageData(pixels, 0, 0);
  canvas.width = width;
  canvas.height = height;
  const target = canvas.getContext("2d");
  target.clearRect(0, 0, width, height);
  target.imageSmoothingEnabled = true;
  target.imageSmoothingQuality = "high";
  const [x, y, side] = placement(width, height, page.meta ? page.meta.input.resize : "crop");
  target.drawImage(small, x, y, side, side);
  canvas.dataset.drawn = "1";
  canvas.title = heatmap.label ? "where the evidence for " + heatmap.label + " lies" : "heatmap";
}

// ------------------------------------------------------------------ files
function card(file, bitmap) {
  const box = document.createElement("div");
  box.className = "card";
  const title = document.createElement("h3");
  title.textContent = file.name || "pasted image";
  const pic = document.createElement("div");
  pic.className = "pic";
  const image = document.createElement("canvas");
  image.className = "image";
  image.width = bitmap.width;
  image.height = bitmap.height;
  image.getContext("2d").drawImage(bitmap, 0, 0);
  const heat = document.createElement("canvas");
  heat.className = "heat";
  heat.width = bitmap.width;
  heat.height = bitmap.height;
  pic.append(image, heat);
  const headline = document.createElement("p");
  headline.className = "headline";
  headline.textContent = "predicting…";
  const answerRows = document.createElement("div");
  box.append(title, pic, headline, answerRows);
  $("cards").prepend(box);
  return {box, heat, headline, answerRows, width: bitmap.width, height: bitmap.height};
}

async function uploadFiles(files) {
  files = [...files].filter((f) => f && f.type.startsWith("image/"));
  if (!files.length) { setStatus("no image among those files", true); return; }
  const most = (page.meta && page.meta.server.max_files_per_request) || 16;
  setStatus("predicting " + files.length + (files.length > 1 ? " images…" : " image…"));
  for (let start = 0; start < files.length; start += most) {
    const group = files.slice(start, start + most);
    const cards = [];
    for (const file of group) {
      let bitmap;
      try { bitmap = await createImageBitmap(file); } catch (err) { bitmap = null; }
      cards.push(bitmap ? card(file, bitmap) : null);
    }
    const body = new FormData();
    group.forEach((file, i) => body.append("file", file, file.name || "pasted-" + i + ".png"));
    let response;
    try {
      response = await fetch(predictUrl(), {method: "POST", body, headers: headers()});
    } catch (err) { setStatus("request failed: " + err, true); return; }
    if (!response.ok) {
      if (response.status === 401) needKey();
      setStatus("error " + response.status + ": " + await readError(response), true);
      cards.forEach((c) => c && c.box.remove());
      return;
    }
    const data = await response.json();
    data.predictions.forEach((answer, i) => {
      const c = cards[i];
      if (!c) return;
      c.headline.textContent = headlineOf(answer);
      c.answerRows.replaceChildren(...rows(answer, data.task));
      if (answer.heatmap) drawHeatmap(c.heat, c.width, c.height, answer.heatmap, answer);
    });
    setStatus(files.length + (files.length > 1 ? " images" : " image") + " answered in " +
              data.timing.total_ms.toFixed(0) + " ms by " + data.model_version);
  }
  pollDrift();
}

const drop = $("drop"), input = $("file");
drop.addEventListener("click", () => input.click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
});
input.addEventListener("change", () => { uploadFiles(input.files); input.value = ""; });
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => uploadFiles(e.dataTransfer.files));
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData ? e.clipboardData.files : [])];
  if (files.length) { e.preventDefault(); uploadFiles(files); }
});

// ------------------------------------------------------------------ the camera
function showCamStats() {
  const stats = $("camstats");
  const now = performance.now();
  cam.times = cam.times.filter((t) => now - t < 5000);
  const rate = cam.times.length > 1 ? (cam.times.length - 1) * 1000 /
    (cam.times[cam.times.length - 1] - cam.times[0]) : 0;
  Object.assign(stats.dataset, {running: String(cam.running), sent: cam.sent,
    answered: cam.answered, refused: cam.refused, interval: Math.round(cam.gap),
    maxInFlight: cam.maxInFlight});
  stats.textContent = cam.running
    ? "camera: " + rate.toFixed(1) + " answers/s · " + cam.answered + " answered · " +
      (cam.refused ? cam.refused + " refused (server busy) · " : "") +
      "next frame after " + Math.round(Math.max(cam.gap, MIN_GAP_MS)) + " ms"
    : cam.answered ? "camera stopped after " + cam.answered + " answers" : "";
}

function grabFrame(video) {
  const canvas = document.createElement("canvas");
  const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
}

async function sendFrame(blob) {
  cam.inFlight += 1;
  cam.maxInFlight = Math.max(cam.maxInFlight, cam.inFlight);
  cam.sent += 1;
  try {
    return await fetch(predictUrl(), {method: "POST", body: blob,
                                       headers: headers({"Content-Type": "image/jpeg"})});
  } finally {
    cam.inFlight -= 1;
  }
}

async function cameraLoop() {
  const video = $("video");
  while (cam.running) {
    let started = performance.now();
    if (video.readyState >= 2 && video.videoWidth) {
      const blob = await grabFrame(video);
      let response = null;
      try { response = await sendFrame(blob); } catch (err) { response = null; }
      if (!cam.running) break;
      if (response && response.ok) {
        const data = await response.json();
        const answer = data.predictions[0];
        cam.answered += 1;
        cam.times.push(performance.now());
        cam.gap = cam.gap / 2 < MIN_GAP_MS ? 0 : cam.gap / 2;
        $("camanswer").textContent = headlineOf(answer);
        const heat = $("camheat");
        if (answer.heatmap) {
          await drawHeatmap(heat, video.videoWidth, video.videoHeight, answer.heatmap, answer);
        } else {
          heat.getContext("2d").clearRect(0, 0, heat.width, heat.height);
        }
      } else if (response && response.status === 503) {
        // Busy (queue full) or not ready: wait at least what the server asks, and twice as
        // long as the last wait, before the next frame.
        cam.refused += 1;
        const asked = 1000 * (parseFloat(response.headers.get("Retry-After")) || 1);
        cam.gap = Math.min(MAX_GAP_MS, Math.max(asked, 2 * cam.gap, 250));
        started = performance.now();  // the wait counts from the refusal, not the frame
      } else if (response && response.status === 401) {
        needKey();
        stopCamera();
        setStatus("the camera needs the API key", true);
      } else {
        const why = response ? "error " + response.status + ": " + await readError(response)
                             : "request failed";
        cam.gap = Math.min(MAX_GAP_MS, Math.max(1000, 2 * cam.gap));
        setStatus("camera frame: " + why, true);
      }
    }
    showCamStats();
    const wait = Math.max(MIN_GAP_MS, cam.gap) - (performance.now() - started);
    if (wait > 0) await sleep(wait);
  }
  showCamStats();
}

async function startCamera() {
  if (cam.running) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives no camera here (it needs https or localhost)", true);
    return;
  }
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (err) {
    setStatus("no camera: " + err.message, true);
    return;
  }
  const video = $("video");
  video.srcObject = cam.stream;
  await video.play();
  $("stage").classList.remove("hidden");
  cam.running = true;
  cam.gap = 0;
  $("camstart").disabled = true;
  $("camstop").disabled = false;
  $("camstop").focus();
  cameraLoop();
}

function stopCamera() {
  cam.running = false;
  if (cam.stream) cam.stream.getTracks().forEach((track) => track.stop());
  cam.stream = null;
  $("video").srcObject = null;
  $("camstart").disabled = false;
  $("camstop").disabled = true;
  $("camstart").focus();
  showCamStats();
}

$("camstart").addEventListener("click", startCamera);
$("camstop").addEventListener("click", stopCamera);

// ------------------------------------------------------------------ drift
async function pollDrift() {
  let data;
  try {
    const response = await fetch(base() + "drift", {headers: headers()});
    if (!response.ok) return;
    data = await response.json();
  } catch (err) { return; }
  const panel = $("drift"), what = $("driftwhat");
  what.replaceChildren();
  let state, badge, text;
  if (data.status === "off") {
    state = "off"; badge = "off";
    text = "drift monitoring is off" + (data.reason ? ": " + data.reason : "");
  } else if (data.status === "collecting") {
    state = "collecting"; badge = "collecting";
    text = data.needed + " more predictions before the first test (" + data.window +
      " so far, window " + data.window_size + ")";
  } else if (data.drifted) {
    state = "drift"; badge = "drift";
    const signals = data.what_drifted || [];
    text = signals.length ? "strongest signal: " + signals[0]
                          : "the recent images differ from the reference (p = " +
                            Number(data.p_value).toPrecision(2) + ")";
    signals.slice(1, 4).forEach((signal) => {
      const item = document.createElement("li");
      item.textContent = signal;
      what.appendChild(item);
    });
  } else {
    state = "ok"; badge = "ok";
    text = "the last " + data.current_n + " predictions look like the reference (p = " +
      Number(data.p_value).toPrecision(2) + ")";
  }
  panel.dataset.state = state;
  $("driftbadge").textContent = badge;
  $("drifttext").textContent = text;
}

(async () => {
  await loadModels();
  try { await loadMetadata(); } catch (err) {
    $("model").textContent = "metadata unavailable";
  }
  pollDrift();
  setInterval(pollDrift, DRIFT_EVERY_MS);
})();
</script>
</body>
</html>
"""
