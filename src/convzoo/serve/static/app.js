// convzoo serve page: plain JS, no build step, talks only to this server's /v1 API.
"use strict";

const $ = (sel) => document.querySelector(sel);
let models = [];

function current() { return models.find((m) => m.id === $("#model").value) || models[0]; }

// as many classes as the model has, at most 5 (a 3-class model shows its top-3, as `eval` reports it)
function topk(m) { return Math.min(5, m.num_classes); }

function fmtInt(n) { return n.toLocaleString("en-US"); }
function fmtG(n) { return n >= 1e9 ? (n / 1e9).toFixed(2) + " G" : n >= 1e6 ? (n / 1e6).toFixed(1) + " M" : fmtInt(n); }

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function loadModels() {
  models = (await getJSON("/v1/models")).models;
  const sel = $("#model");
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = `${m.id} (${m.weights})`;
    sel.append(o);
  }
  sel.addEventListener("change", showModel);
  showModel();
}

function showModel() {
  const m = current();
  if (!m) return;
  const s = m.spec;
  $("#model-title").textContent = `${m.model}: ${m.num_classes} classes`;
  $("#model-info").textContent = `weights ${m.weights} (${s.source}), input ${m.input_size}×${m.input_size}, ` +
    `${m.precision} on ${m.device}${m.compiled ? ", compiled" : ""}`;
  $("#io-hint").textContent = m.places365 ? " and the indoor/outdoor verdict of the Places365 demo" : "";
  $("#topk-hint").textContent = topk(m) === m.num_classes
    ? `All ${m.num_classes} classes ranked` : `The top-${topk(m)} of ${m.num_classes} classes`;
  const chart = `/v1/models/${encodeURIComponent(m.id)}/chart.png`;
  $("#chart").src = chart;
  $("#chart-link").href = chart;
  $("#chart-note").textContent = m.published_top1 === null
    ? `${m.model} has no published ImageNet accuracy, so it is not on the chart.`
    : `${m.model} is ringed in red at its architecture's published ${m.published_top1} % top-1 ` +
      "(the reference weights' number, not a measurement of the weights served here).";
  loadSummary(m).catch((e) => { $("#chart-note").textContent = `summary unavailable: ${e.message}`; });
}

async function loadSummary(m) {
  const p = await getJSON(`/v1/models/${encodeURIComponent(m.id)}/summary`);
  const all = $("#all-layers").checked;
  const body = $("#summary tbody");
  body.replaceChildren();
  for (const r of p.layers) {
    if (!all && r.depth > 0) continue;
    const tr = document.createElement("tr");
    if (r.depth === 0) tr.className = "block";
    const rf = r.receptive_field === null ? "global" : String(r.receptive_field);
    for (const v of [(r.depth ? "\u00a0\u00a0" : "") + r.name, r.type, r.kernel, r.output_shape.join("×"),
                     fmtInt(r.params), fmtInt(r.macs), rf]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    body.append(tr);
  }
  const foot = document.createElement("tr");
  foot.innerHTML = "<td colspan=4></td><td></td><td></td><td></td>";
  foot.children[0].textContent = `total at ${p.input_size}×${p.input_size}`;
  foot.children[1].textContent = fmtG(p.params);
  foot.children[2].textContent = fmtG(p.macs);
  body.append(foot);
}

function addCard(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = file.name;
  card.querySelector(".photo").src = URL.createObjectURL(file);
  $("#results").prepend(card);
  return card;
}

function showResult(card, result, modelId) {
  const m = models.find((x) => x.id === modelId);
  const k = result.predictions.length;
  card.querySelector(".status").textContent =
    `top-${k}${m ? ` of ${m.num_classes} classes` : ""} by ${modelId}`;
  const list = card.querySelector(".top");
  for (const p of result.predictions) {
    const li = document.createElement("li");
    li.dataset.label = p.label;
    li.dataset.index = p.index;
    li.dataset.probability = p.probability;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${(p.probability * 100).toFixed(2)}%`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = `${(p.probability * 100).toFixed(2)} %`;
    li.append(bar, label, prob);
    list.append(li);
  }
  if (result.indoor_outdoor) {
    const io = card.querySelector(".io");
    io.hidden = false;
    io.dataset.vote = result.indoor_outdoor.vote;
    io.textContent = `scene: ${result.indoor_outdoor.vote} (outdoor score ${result.indoor_outdoor.outdoor_score.toFixed(2)})`;
  }
  const cam = card.querySelector(".cam");
  if (result.cam) {
    cam.src = result.cam;
    cam.hidden = false;
    cam.title = `where the evidence for "${result.predictions[0].label}" lies`;
  } else if (result.cam_error) {
    card.querySelector(".status").textContent += " (no activation map: this network has no global-average-pooling head)";
  }
}

async function classify(file) {
  const card = addCard(file);
  const m = current();
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const url = `/v1/predict?model=${encodeURIComponent(m.id)}&topk=${topk(m)}&cam=true`;
    const r = await fetch(url, { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    if (body.results[0].error) throw new Error(body.results[0].error);
    showResult(card, body.results[0], body.model);
    card.dataset.state = "done";
  } catch (e) {
    card.querySelector(".status").textContent = `error: ${e.message}`;
    card.dataset.state = "error";
  }
}

function handleFiles(files) {
  for (const f of files) classify(f);
}

function setupDrop() {
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => handleFiles(e.dataTransfer.files));
  $("#files").addEventListener("change", (e) => { handleFiles(Array.from(e.target.files)); e.target.value = ""; });
  $("#all-layers").addEventListener("change", () => loadSummary(current()).catch(() => {}));
}

document.addEventListener("DOMContentLoaded", () => {
  setupDrop();
  loadModels().catch((e) => { $("#model-info").textContent = `cannot reach the server: ${e.message}`; });
});
