// tagface studio: plain JavaScript, no dependencies. Talks to /api/* on the same server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const HISTORY_KEY = "tagface-studio-history";
const HISTORY_MAX = 40;

const state = {
  vocab: null,
  hair: "random",
  eyes: "random",
  current: null,     // {kind, caption, faces: [{src, ref}]}: what the stage shows
  lastGenerate: null, // the last /api/generate request that was shown (seed, n, truncation)
  varyFace: null,    // {src, ref}
  slotA: null,
  slotB: null,
  history: [],
  busy: 0,
};

// ------------------------------------------------------------------ API
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new Error("the studio server cannot be reached; is `tagface serve` still running?");
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    let msg = (data && data.detail) || `${res.status} ${res.statusText}`;
    if (res.status === 503) msg = `the server is busy; try again in ${res.headers.get("Retry-After") || 1} s`;
    throw new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
  }
  return data;
}

async function busy(el, fn) {
  state.busy++;
  if (el) el.classList.add("busy");
  setStatus("");
  try {
    return await fn();
  } catch (err) {
    setStatus(err.message, true);
    return null;
  } finally {
    state.busy--;
    if (el) el.classList.remove("busy");
  }
}

function setStatus(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError && text));
}

// ------------------------------------------------------------------ controls
function buildSwatches(kind, colours, swatches) {
  const box = $(`#${kind}-swatches`);
  box.replaceChildren();
  const all = ["random", ...colours];
  for (const colour of all) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch" + (colour === "random" ? " random" : "");
    b.dataset.kind = kind;
    b.dataset.colour = colour;
    b.setAttribute("role", "radio");
    b.setAttribute("aria-checked", String(state[kind] === colour));
    b.title = colour === "random" ? `random ${kind === "hair" ? "hair" : "eye"} colour (from the seed)` : `${colour} ${kind === "hair" ? "hair" : "eyes"}`;
    b.setAttribute("aria-label", b.title);
    if (colour === "random") b.textContent = "?";
    else b.style.setProperty("--c", swatches[colour]);
    b.addEventListener("click", () => pickColour(kind, colour));
    box.append(b);
  }
}

function pickColour(kind, colour) {
  state[kind] = colour;
  for (const b of document.querySelectorAll(`.swatch[data-kind="${kind}"]`)) {
    b.setAttribute("aria-checked", String(b.dataset.colour === colour));
  }
  $(`#${kind}-picked`).textContent = colour;
  if ($("#live").checked && state.lastGenerate) recolour();
}

function bindSlider(id, fmt) {
  const input = $(`#${id}`), out = $(`#${id}-out`);
  const show = () => { out.textContent = fmt(Number(input.value)); };
  input.addEventListener("input", show);
  show();
  return input;
}

function seedValue() {
  const raw = $("#seed").value.trim();
  if (raw === "") return null;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 0 || v > 4294967295) throw new Error("the seed must be a whole number from 0 to 4294967295");
  return v;
}

function newSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] % 2147483648;
}

// ------------------------------------------------------------------ drawing
function request() {
  return {
    hair: state.hair,
    eyes: state.eyes,
    n: Number($("#n").value),
    seed: seedValue(),
    truncation: Number($("#truncation").value),
    strict_tags: $("#strict").checked,
  };
}

async function generate(body) {
  const t0 = performance.now();
  let b = body;
  const data = await busy($("#faces"), async () => {
    b = body || request();  // inside busy: a bad seed is shown as the status, not thrown
    return api("/api/generate", b);
  });
  if (!data) return;
  $("#seed").value = data.seed;
  state.lastGenerate = { seed: data.seed, n: data.images.length, truncation: data.truncation };
  const caption = `${data.hair} hair · ${data.eyes} eyes · seed ${data.seed}${b.strict_tags ? " · strict tags" : ""}`;
  show({ kind: "generate", caption, faces: data.images.map((src, i) => ({ src, ref: data.faces[i] })),
         request: { hair: state.hair, eyes: state.eyes, n: data.images.length, seed: data.seed, truncation: data.truncation,
                    strict_tags: Boolean(b.strict_tags) } });
  $("#timing").textContent = `${data.images.length} face${data.images.length > 1 ? "s" : ""} in ${Math.round(performance.now() - t0)} ms`;
  const picked = [];
  if (data.notes.some((n) => n.startsWith("no hair"))) picked.push(`${data.hair} hair`);
  if (data.notes.some((n) => n.startsWith("no eye"))) picked.push(`${data.eyes} eyes`);
  const unseen = data.notes.filter((n) => n.includes("never occur") || n.startsWith("strict tags"));
  $("#notes").textContent = [
    picked.length ? `random, from the seed and the training data's colour frequencies: ${picked.join(", ")}` : "",
    ...unseen].filter(Boolean).join(" · ");
  $("#recolour").disabled = false;
  addHistory(state.current);
  if (window.matchMedia("(max-width: 860px)").matches) $(".stage").scrollIntoView({ behavior: "smooth", block: "start" });
}

function recolour() {
  if (!state.lastGenerate) return;
  const b = request();
  b.seed = state.lastGenerate.seed;
  b.n = state.lastGenerate.n;
  return generate(b);
}

function show(entry) {
  state.current = entry;
  $("#caption").textContent = entry.caption;
  renderFaces($("#faces"), entry.faces);
}

function renderFaces(box, faces) {
  const tpl = $("#face-template");
  box.replaceChildren();
  if (!faces.length) {
    const e = document.createElement("div");
    e.className = "empty";
    e.textContent = "No faces yet";
    box.append(e);
    return;
  }
  faces.forEach((face, i) => {
    const node = tpl.content.firstElementChild.cloneNode(true);
    const img = node.querySelector("img");
    img.src = face.src;
    img.alt = `face ${i + 1}: ${face.ref.hair} hair, ${face.ref.eyes} eyes, seed ${face.ref.seed}`;
    img.title = img.alt;
    node.dataset.index = i;
    node.style.animationDelay = `${Math.min(i, 24) * 12}ms`;
    node.querySelector('[data-act="vary"]').addEventListener("click", () => chooseVary(face));
    node.querySelector('[data-act="a"]').addEventListener("click", () => chooseSlot("a", face));
    node.querySelector('[data-act="b"]').addEventListener("click", () => chooseSlot("b", face));
    node.querySelector('[data-act="png"]').addEventListener("click", () => downloadPng(face, i));
    box.append(node);
  });
}

function fillSlot(el, face, label) {
  el.replaceChildren();
  const img = document.createElement("img");
  img.src = face.src;
  img.alt = label;
  el.append(img);
  el.classList.add("filled");
}

function chooseVary(face) {
  state.varyFace = face;
  fillSlot($("#vary-slot"), face, "face to vary");
  $("#vary").disabled = false;
  $("#vary-panel").scrollIntoView({ behavior: "smooth", block: "nearest" });
  vary();
}

function chooseSlot(which, face) {
  state[which === "a" ? "slotA" : "slotB"] = face;
  fillSlot($(`#slot-${which}`), face, `interpolation ${which.toUpperCase()}`);
  $("#interpolate").disabled = !(state.slotA && state.slotB);
  if (state.slotA && state.slotB) interpolate();
}

async function vary() {
  const face = state.varyFace;
  if (!face) return;
  const body = { ...face.ref, strength: Number($("#strength").value), n: Number($("#vary-n").value) };
  const data = await busy($("#variations"), () => api("/api/vary", body));
  if (!data) return;
  const faces = data.images.map((src, i) => ({ src, ref: data.faces[i] }));
  renderFaces($("#variations"), faces);
  addHistory({ kind: "vary", caption: `variations of ${data.hair}/${data.eyes} seed ${face.ref.seed} #${face.ref.index + 1} · strength ${data.strength}`, faces });
}

async function interpolate() {
  if (!(state.slotA && state.slotB)) return;
  const body = { a: state.slotA.ref, b: state.slotB.ref, frames: Number($("#frames").value) };
  const data = await busy($("#strip"), () => api("/api/interpolate", body));
  if (!data) return;
  const strip = $("#strip");
  strip.replaceChildren(...data.frames.map((src, i) => {
    const img = document.createElement("img");
    img.src = src;
    img.alt = `frame ${i + 1} of ${data.frames.length}`;
    return img;
  }));
  $("#gif").src = data.gif;
  $("#gif-download").href = data.gif;
  $("#gif-figure").hidden = false;
}

function downloadPng(face, i) {
  // Upscale 4x in the browser with the chosen rendering, so the file is as the page shows it.
  const img = new Image();
  img.onload = () => {
    const scale = 4;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth * scale;
    c.height = img.naturalHeight * scale;
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = document.documentElement.style.getPropertyValue("--render") === "auto";
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, c.width, c.height);
    c.toBlob((blob) => {
      const a = document.createElement("a");
      const r = face.ref;
      a.href = URL.createObjectURL(blob);
      a.download = `tagface-${r.hair}-${r.eyes}-seed${r.seed}-${r.index + 1}${r.steps && r.steps.length ? "-var" : ""}.png`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }, "image/png");
  };
  img.src = face.src;
}

// ------------------------------------------------------------------ history (this tab only)
function addHistory(entry) {
  state.history.unshift({ ...entry, at: Date.now() });
  state.history.length = Math.min(state.history.length, HISTORY_MAX);
  saveHistory();
  renderHistory();
}

function saveHistory() {
  let keep = state.history.length;
  for (;;) {
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(state.history.slice(0, keep)));
      return;
    } catch (_) {  // over the storage quota: keep fewer entries
      if (keep === 0) return;
      keep = Math.floor(keep / 2);
    }
  }
}

function loadHistory() {
  try { state.history = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]"); } catch (_) { state.history = []; }
}

function renderHistory() {
  const list = $("#history");
  $("#history-empty").hidden = state.history.length > 0;
  list.replaceChildren(...state.history.map((entry) => {
    const li = document.createElement("li");
    const thumbs = document.createElement("div");
    thumbs.className = "thumbs";
    for (const f of entry.faces.slice(0, 8)) {
      const img = document.createElement("img");
      img.src = f.src;
      img.alt = "";
      thumbs.append(img);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const what = document.createElement("b");
    what.textContent = entry.kind === "vary" ? "variations" : `${entry.faces.length} face${entry.faces.length > 1 ? "s" : ""}`;
    const when = document.createElement("span");
    when.textContent = new Date(entry.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    meta.append(what, when);
    li.title = entry.caption;
    li.append(thumbs, meta);
    li.addEventListener("click", () => restore(entry));
    return li;
  }));
}

function restore(entry) {
  show(entry);
  if (entry.kind === "generate" && entry.request) {
    const r = entry.request;
    $("#seed").value = r.seed;
    $("#n").value = r.n; $("#n").dispatchEvent(new Event("input"));
    $("#truncation").value = r.truncation; $("#truncation").dispatchEvent(new Event("input"));
    $("#strict").checked = Boolean(r.strict_tags);
    const live = $("#live").checked;
    $("#live").checked = false;
    pickColour("hair", r.hair);
    pickColour("eyes", r.eyes);
    $("#live").checked = live;
    state.lastGenerate = { seed: r.seed, n: r.n, truncation: r.truncation };
    $("#recolour").disabled = false;
  }
  $("#timing").textContent = "from history";
  $("#notes").textContent = "";
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ------------------------------------------------------------------ start
function setRender(mode) {
  document.documentElement.style.setProperty("--render", mode === "smooth" ? "auto" : "pixelated");
  for (const b of document.querySelectorAll("[data-render]")) {
    const on = b.dataset.render === mode;
    b.classList.toggle("active", on);
    b.setAttribute("aria-pressed", String(on));
  }
}

async function start() {
  bindSlider("n", (v) => String(v));
  bindSlider("truncation", (v) => v.toFixed(2));
  bindSlider("strength", (v) => v.toFixed(2));
  bindSlider("vary-n", (v) => String(v));
  bindSlider("frames", (v) => String(v));
  setRender("pixelated");
  for (const b of document.querySelectorAll("[data-render]")) b.addEventListener("click", () => setRender(b.dataset.render));

  $("#generate").addEventListener("click", () => generate());
  $("#recolour").addEventListener("click", () => recolour());
  $("#dice").addEventListener("click", () => {
    $("#seed").value = newSeed();
    const d = $("#dice");
    d.classList.remove("rolling"); void d.offsetWidth; d.classList.add("rolling");
    generate();
  });
  $("#seed").addEventListener("keydown", (e) => { if (e.key === "Enter") generate(); });
  $("#vary").addEventListener("click", () => vary());
  $("#interpolate").addEventListener("click", () => interpolate());
  $("#clear-history").addEventListener("click", () => { state.history = []; saveHistory(); renderHistory(); });

  loadHistory();
  renderHistory();
  renderFaces($("#faces"), []);

  const vocab = await busy(null, () => api("/api/vocabulary"));
  if (!vocab) return;
  state.vocab = vocab;
  buildSwatches("hair", vocab.hair, vocab.swatches.hair);
  buildSwatches("eyes", vocab.eyes, vocab.swatches.eyes);
  const m = vocab.model;
  $("#model-info").textContent = `${m.name} · ${m.recipe} · step ${m.step} · ${m.resolution}px`;
  $("#truncation").value = m.default_truncation;
  $("#truncation").dispatchEvent(new Event("input"));
  $("#n").max = vocab.limits.max_faces;
  document.body.dataset.ready = "true";
}

start();
