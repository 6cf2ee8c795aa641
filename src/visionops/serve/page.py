"""The upload page served at ``GET /``: drop an image, see the answer. No external resources."""

from __future__ import annotations

__all__ = ["UPLOAD_PAGE"]

UPLOAD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>visionops</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
         padding: 0 1rem; color: #1d1d1f; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  #model { color: #666; margin-top: 0; }
  #drop { border: 2px dashed #999; border-radius: 10px; padding: 2.2rem 1rem;
          text-align: center; cursor: pointer; background: #fafafa; }
  #drop.over { border-color: #0a66c2; background: #eef5fc; }
  .pictures { display: flex; gap: 1rem; margin-top: 1rem; }
  .pictures figure { margin: 0; display: none; }
  .pictures img { width: 220px; height: 220px; object-fit: contain; image-rendering: pixelated; }
  .pictures figcaption { font-size: .8rem; color: #666; }
  #status { margin: 1rem 0 .4rem; font-weight: 600; }
  #status.error { color: #b00020; }
  .row { display: flex; align-items: center; gap: .6rem; margin: .25rem 0; }
  .name { width: 12rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { flex: 1; background: #e6e6e6; border-radius: 4px; height: .9rem; }
  .bar > span { display: block; height: 100%; background: #0a66c2; border-radius: 4px; }
  .num { width: 6.5rem; text-align: right; font-variant-numeric: tabular-nums; }
  #key { display: none; margin-top: 1rem; }
  small { color: #666; }
</style>
</head>
<body>
<h1>visionops</h1>
<p id="model">loading model information…</p>
<div id="drop" tabindex="0">
  <strong>Drop an image here</strong> or click to choose one
  <input id="file" type="file" accept="image/*" hidden>
</div>
<label id="key">API key: <input id="apikey" type="password" autocomplete="off"></label>
<div class="pictures">
  <figure id="previewbox"><img id="preview" alt="uploaded image">
    <figcaption>uploaded</figcaption></figure>
  <figure id="overlaybox"><img id="overlay" alt="anomaly heatmap over the image">
    <figcaption>heatmap (bright = anomalous; mid-ramp red = the threshold)</figcaption></figure>
</div>
<div id="status" role="status"></div>
<div id="result"></div>
<p><small>JSON API: <code>POST /predict</code> · <a href="docs">API docs</a> ·
<a href="metadata">metadata</a> · <a href="metrics">metrics</a></small></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const drop = $("drop"), input = $("file"), statusBox = $("status"), result = $("result");
let modelTask = null;

function headers() {
  const key = $("apikey").value || localStorage.getItem("visionops-api-key") || "";
  return key ? {"X-API-Key": key} : {};
}

function setStatus(text, isError) {
  statusBox.textContent = text;
  statusBox.className = isError ? "error" : "";
}

function row(name, value, fraction) {
  const div = document.createElement("div");
  div.className = "row";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  label.title = name;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = Math.max(0, Math.min(1, fraction)) * 100 + "%";
  bar.appendChild(fill);
  const num = document.createElement("span");
  num.className = "num";
  num.textContent = value;
  div.append(label, bar, num);
  return div;
}

function render(answer, task) {
  result.replaceChildren();
  if (task === "classification") {
    answer.top_k.forEach((e) => result.appendChild(
      row(e.label, (e.probability * 100).toFixed(1) + " %", e.probability)));
  } else if (task === "multilabel") {
    const chosen = new Set(answer.labels.map((e) => e.label));
    Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]).forEach(([name, p]) =>
      result.appendChild(row((chosen.has(name) ? "✔ " : "") + name,
                             (p * 100).toFixed(1) + " %", p)));
  } else if (task === "regression") {
    answer.values.forEach((v) => result.appendChild(
      row(v.name, v.value.toPrecision(4) + (v.unit ? " " + v.unit : ""), 0)));
  } else if (task === "anomaly") {
    result.appendChild(row(answer.verdict, answer.score.toPrecision(4),
                           Math.min(1, answer.score / (2 * answer.threshold || 1))));
    const overlay = answer.heatmap && answer.heatmap.overlay_png_base64;
    if (overlay) {
      $("overlay").src = "data:image/png;base64," + overlay;
      $("overlaybox").style.display = "block";
    }
  }
}

async function upload(file) {
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  $("previewbox").style.display = "block";
  $("overlaybox").style.display = "none";
  setStatus("predicting…", false);
  result.replaceChildren();
  const body = new FormData();
  body.append("file", file, file.name || "upload");
  try {
    const url = modelTask === "anomaly" ? "predict?heatmap=true" : "predict";
    const response = await fetch(url, {method: "POST", body, headers: headers()});
    const data = await response.json();
    if (!response.ok) {
      if (response.status === 401) $("key").style.display = "block";
      setStatus("error " + response.status + ": " + data.error.message, true);
      return;
    }
    const answer = data.predictions[0];
    const headline = answer.label || (answer.labels && answer.labels.map((e) => e.label)
      .join(", ")) || answer.verdict || "done";
    setStatus(headline + "  (" + data.timing.total_ms.toFixed(0) + " ms, " +
              data.model_version + ")", false);
    render(answer, data.task);
  } catch (err) {
    setStatus("request failed: " + err, true);
  }
}

drop.addEventListener("click", () => input.click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter") input.click(); });
input.addEventListener("change", () => upload(input.files[0]));
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => upload(e.dataTransfer.files[0]));
$("apikey").addEventListener("change", () =>
  localStorage.setItem("visionops-api-key", $("apikey").value));

fetch("metadata", {headers: headers()}).then(async (response) => {
  if (response.status === 401) {
    $("key").style.display = "block";
    $("model").textContent = "this server needs an API key";
    return;
  }
  const meta = await response.json();
  modelTask = meta.task;
  $("model").textContent = meta.task + " model " + meta.model_version + " · " +
    meta.input.size + " px · " + meta.labels.length + " " +
    (meta.task === "regression" ? "targets" : "labels");
}).catch(() => { $("model").textContent = "metadata unavailable"; });
</script>
</body>
</html>
"""
