// polyclip's search page: one query, two models side by side, overlap@k and latency.
// Everything a client wrote (payloads, ids) is put on the page as text, never as HTML. The API
// key lives in sessionStorage (this tab only) and is sent as a header, never in a URL.
"use strict";

const KEY = "polyclip-api-key";
const $ = (id) => document.getElementById(id);
let models = [];
let imageData = null; // base64 of the chosen image, when a query is an image

function key() { return sessionStorage.getItem(KEY) || ""; }

function showKey() {
  $("key-state").textContent = key() ? "API key set for this tab" : "no API key";
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (key()) headers.Authorization = `Bearer ${key()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const started = performance.now();
  const response = await fetch(path, {
    ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const ms = performance.now() - started;
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const field = err.field ? ` (field ${err.field})` : "";
    const error = new Error(`${response.status} ${err.code || "error"}: ${err.message || response.statusText}${field}`);
    error.status = response.status;
    throw error;
  }
  return { data, ms };
}

function say(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function fill(select, values, preferred) {
  const current = select.value;
  select.replaceChildren(...values.map((v) => {
    const option = document.createElement("option");
    option.value = v; option.textContent = v;
    return option;
  }));
  const pick = values.includes(current) ? current : values.find((v) => v === preferred) || values[0];
  if (pick !== undefined) select.value = pick;
}

async function load() {
  say("");
  try {
    const [list, collections] = await Promise.all([api("/v1/models"), api("/collections")]);
    models = list.data.data;
    const ids = models.map((m) => m.id);
    fill($("left"), ids, "teacher");
    fill($("right"), ids, ids.includes("student") ? "student" : ids[1]);
    fill($("collection"), collections.data.collections, "captions");
    updateImageRow();
  } catch (e) {
    say(e.status === 401 ? `${e.message}. Set the API key.` : e.message);
  }
}

function updateImageRow() {
  const dual = [$("left").value, $("right").value].some(
    (id) => (models.find((m) => m.id === id) || {}).kind === "dual");
  $("image-row").hidden = !dual;
  if (!dual) clearImage();
}

function clearImage() { imageData = null; $("image").value = ""; }

function payloadNode(payload) {
  const frag = document.createDocumentFragment();
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof payload.text === "string" ? payload.text : "";
  frag.append(text);
  if (typeof payload.image === "string" && payload.image.startsWith("data:image/")) {
    const img = document.createElement("img"); // data: URIs only (the page's CSP allows no others)
    img.src = payload.image; img.alt = "result image";
    frag.append(img);
  }
  const rest = { ...payload }; delete rest.text; delete rest.image;
  if (Object.keys(rest).length) {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(rest);
    frag.append(pre);
  }
  return frag;
}

function render(side, title, result, shared) {
  const section = $(`side-${side}`);
  $(`title-${side}`).textContent = title;
  section.querySelector(".latency").textContent = result
    ? `${result.ms.toFixed(0)} ms · space ${result.data.space}` : "";
  const list = section.querySelector(".hits");
  list.replaceChildren(...(result ? result.data.results : []).map((hit) => {
    const item = document.createElement("li");
    if (shared.has(String(hit.id))) item.classList.add("shared");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${hit.score.toFixed(3)} · id ${hit.id}`;
    item.append(score, payloadNode(hit.payload || {}));
    return item;
  }));
}

async function search(event) {
  event.preventDefault();
  say("");
  const text = $("query").value.trim();
  if (!text && !imageData) { say("Type a query (or choose an image)."); return; }
  const collection = $("collection").value;
  if (!collection) { say("There is no collection to search yet."); return; }
  const limit = Number($("limit").value);
  const query = imageData ? { image: imageData } : { text };
  const sides = [$("left").value, $("right").value];
  $("go").disabled = true;
  try {
    const answers = await Promise.allSettled(sides.map((model) => api(
      `/collections/${encodeURIComponent(collection)}/search`,
      { method: "POST", body: { query, model, limit } })));
    const ok = answers.map((a) => (a.status === "fulfilled" ? a.value : null));
    const failed = answers.filter((a) => a.status === "rejected").map((a) => a.reason.message);
    const ids = ok.map((r) => new Set(r ? r.data.results.map((h) => String(h.id)) : []));
    const shared = new Set([...ids[0]].filter((id) => ids[1].has(id)));
    render("left", sides[0], ok[0], shared);
    render("right", sides[1], ok[1], shared);
    const k = ok[0] ? ok[0].data.results.length : 0;
    const overlap = $("overlap");
    overlap.hidden = !(ok[0] && ok[1]);
    overlap.textContent = k ? `overlap@${k}: ${(shared.size / k).toFixed(2)} (${shared.size} of ${k} in both)` : "";
    say(failed.join("\n"));
  } finally {
    $("go").disabled = false;
  }
}

function readImage() {
  const file = $("image").files[0];
  if (!file) { imageData = null; return; }
  const reader = new FileReader();
  reader.onload = () => { imageData = String(reader.result); };
  reader.readAsDataURL(file);
}

function keyDialog() {
  const dialog = $("key-dialog");
  $("key-input").value = key();
  dialog.showModal();
  $("key-input").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  showKey();
  $("search").addEventListener("submit", search);
  $("left").addEventListener("change", updateImageRow);
  $("right").addEventListener("change", updateImageRow);
  $("image").addEventListener("change", readImage);
  $("clear-image").addEventListener("click", clearImage);
  $("key-button").addEventListener("click", keyDialog);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY); showKey(); $("key-dialog").close(); load();
  });
  $("key-form").addEventListener("submit", () => {
    const value = $("key-input").value.trim();
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
    showKey(); load();
  });
  load();
});
