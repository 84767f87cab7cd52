// The studio page: three views over the page's JSON API (productstudio/web/app.py). No model logic here.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
};
let info = null;

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
  return body;
}
const postJSON = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify(body) });
const fileUrl = (job, file) => `/api/jobs/${job}/files/${file}`;

function showError(message) {
  const box = $("#page-error");
  box.hidden = !message;
  box.textContent = message || "";
}

// --- tabs ---
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${tab.dataset.view}`;
    if (tab.dataset.view === "models") loadModels();
  });
}

// --- generate ---
let generateJob = null;

function tile(job, item, category) {
  const image = el("img", { src: `${fileUrl(job, item.file)}?seed=${item.seed}`, alt: `${category} seed ${item.seed}` });
  const again = el("button", { type: "button", class: "regenerate", text: "Regenerate" });
  const save = el("a", { class: "button", href: fileUrl(job, item.file), download: `${category}-seed${item.seed}.png`,
                         text: "Download" });
  const node = el("div", { class: "tile", "data-index": item.index, "data-seed": item.seed }, image,
                  el("div", { class: "seed", text: `seed ${item.seed} · v${item.version}` }),
                  el("div", { class: "actions" }, again, save));
  again.addEventListener("click", async () => {
    again.disabled = true;
    try {
      const fresh = await api(`/api/generate/${job}/${item.index}`, { method: "POST" });
      node.replaceWith(tile(job, fresh, category));
    } catch (error) { showError(`regenerate: ${error.message}`); again.disabled = false; }
  });
  return node;
}

$("#generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#generate-button");
  button.disabled = true;
  $("#generate-status").textContent = "generating…";
  showError("");
  try {
    const seed = $("#seed").value;
    const answer = await postJSON("/api/generate", { category: $("#category").value, count: Number($("#count").value),
                                                     seed: seed === "" ? null : Number(seed) });
    generateJob = answer.job;
    const first = answer.items[0];
    $("#generate-status").textContent = `${answer.items.length} × ${answer.category.name} by ${first.model} ` +
      `version ${first.version}, via ${info.generator.via}`;
    $("#grid").replaceChildren(...answer.items.map((item) => tile(answer.job, item, answer.category.name)));
    const zip = $("#generate-zip");
    zip.href = `/api/jobs/${answer.job}/zip`;
    zip.hidden = false;
  } catch (error) {
    $("#generate-status").textContent = "";
    showError(`generate: ${error.message}`);
  } finally { button.disabled = false; }
});

// --- edit ---
let chosenFiles = [];

function setFiles(files) {
  chosenFiles = Array.from(files);
  $("#chosen").replaceChildren(...chosenFiles.map((file) => el("li", { text: `${file.name} (${(file.size / 1e6).toFixed(2)} MB)` })));
  $("#edit-button").disabled = chosenFiles.length === 0;
  $("#edit-button").textContent = `Edit ${chosenFiles.length} photo${chosenFiles.length === 1 ? "" : "s"}`;
}
$("#files").addEventListener("change", (event) => setFiles(event.target.files));
const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); setFiles(event.dataTransfer.files); });

function compareView(job, entry) {
  const before = el("img", { class: "before", src: fileUrl(job, entry.source), alt: `${entry.name} before` });
  const after = el("img", { class: "after", src: fileUrl(job, entry.result), alt: `${entry.name} after` });
  const slider = el("input", { type: "range", min: "0", max: "100", value: "50", "aria-label": "before / after" });
  slider.addEventListener("input", () => { after.style.clipPath = `inset(0 0 0 ${slider.value}%)`; });
  return el("div", { class: "compare" }, before, after, slider,
            el("span", { class: "label", style: "left:.2rem", text: "before" }),
            el("span", { class: "label", style: "right:.2rem", text: "after" }));
}

function checksView(entry) {
  const box = el("div", { class: "checks" });
  if (entry.steps.length) box.append(el("p", { text: `operations: ${entry.steps.map((s) => s.operation).join(" → ")}` }));
  for (const exported of entry.exports) {
    const verdict = exported.passed ? "passes" : `fails: ${exported.reason}`;
    box.append(el("p", { class: exported.passed ? "ok export" : "error export", "data-preset": exported.preset,
                         text: `${exported.preset} ${verdict}` }));
    const rows = Object.entries(exported.checks || {}).map(([rule, check]) =>
      el("tr", { class: check.ok ? "ok" : "error" }, el("td", { text: check.ok ? "✓" : "✗" }), el("td", { text: rule }),
         el("td", { text: checkValue(check.value) }), el("td", { text: String(check.rule) })));
    // every check of the format, folded away when all pass
    if (rows.length) box.append(el("details", exported.passed ? {} : { open: "" },
                                   el("summary", { text: `${rows.length} checks` }), el("table", {}, ...rows)));
  }
  return box;
}

function checkValue(value) {
  if (value === null || typeof value !== "object") return String(value);
  return Object.entries(value).filter(([, x]) => typeof x !== "object").map(([key, x]) => `${key} ${x}`).join(", ");
}

function resultView(job, entry) {
  const node = el("div", { class: "result", "data-name": entry.name }, el("h3", { text: entry.name }));
  if (entry.error) node.append(el("p", { class: "error refusal", text: entry.error }));
  else node.append(compareView(job, entry), checksView(entry));
  return node;
}

$("#edit-button").addEventListener("click", async () => {
  const steps = Array.from(document.querySelectorAll("input[name=step]:checked")).map((box) => box.value);
  const restyle = $("input[name=restyle]:checked").value;
  if (restyle) steps.push(restyle);
  const presets = Array.from(document.querySelectorAll("input[name=preset]:checked")).map((box) => box.value);
  const button = $("#edit-button");
  const progress = $("#edit-progress");
  showError("");
  let job;
  try {
    job = (await postJSON("/api/edit", { steps: steps.join(","), presets: presets.join(",") })).job;
  } catch (error) { showError(`edit: ${error.message}`); return; }
  button.disabled = true;
  $("#results").replaceChildren();
  $("#edit-zip").hidden = true;
  progress.max = chosenFiles.length;
  progress.value = 0;
  progress.hidden = false;
  let done = 0, refused = 0;
  for (const file of chosenFiles) {
    $("#edit-status").textContent = `${done} / ${chosenFiles.length} done · editing ${file.name}…`;
    let entry;
    if (file.size > info.limits.max_upload_bytes) {  // not sent at all; the server refuses it too
      entry = { name: file.name, error: `the file is ${(file.size / 1e6).toFixed(1)} MB, over the limit of ` +
                `${(info.limits.max_upload_bytes / 1e6).toFixed(1)} MB`, steps: [], exports: [] };
    } else {
      try {
        entry = await api(`/api/edit/${job}`, { method: "POST", body: file,
                                                headers: { "X-Filename": encodeURIComponent(file.name) } });
      } catch (error) { entry = { name: file.name, error: error.message, steps: [], exports: [] }; }
    }
    if (entry.error) refused += 1;
    done += 1;
    progress.value = done;
    $("#results").append(resultView(job, entry));
  }
  $("#edit-status").textContent = `${done} / ${chosenFiles.length} done` + (refused ? `, ${refused} refused` : "");
  const zip = $("#edit-zip");
  zip.href = `/api/jobs/${job}/zip`;
  zip.hidden = refused === done;
  button.disabled = false;
});

// --- models ---
function fmt(value) { return typeof value === "number" ? (Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(4)) : value; }

async function loadModels() {
  $("#models-status").textContent = "reading the registry…";
  try {
    const models = await api("/api/models");
    $("#models-status").textContent = `${models.model} in ${models.tracking_uri}`;
    $("#versions tbody").replaceChildren(...models.versions.map((v) => el("tr", { "data-version": v.version },
      el("td", { text: `v${v.version}` }),
      el("td", {}, ...v.aliases.map((alias) => el("span", { class: `badge ${alias}`, text: alias }))),
      el("td", { text: Object.entries(v.metrics).map(([k, x]) => `${k} ${fmt(x)}`).join(", ") || "–" }),
      el("td", { text: Object.entries(v.protocol).map(([metric, p]) =>
        `${metric}: ${p.num_real ?? "?"} real, ${p.feature_network ?? "?"}`).join("; ") || "–" }),
      el("td", { text: [v.decision, v.reason, v.rollback && `rollback: ${v.rollback}`].filter(Boolean).join(" — ") || "–" }))));
    const last = models.last_decision;
    $("#decision").replaceChildren(el("h3", { text: "Last promotion decision" }),
      el("p", { text: last ? `v${last.version}: ${last.decision} (${last.decided_at}) — ${last.reason}` : "none recorded yet" }));
    canaryView(models.canary);
  } catch (error) {
    $("#models-status").textContent = "";
    showError(`models: ${error.message}`);
  }
}

function canaryView(canary) {
  const box = $("#canary");
  if (!canary) {
    box.replaceChildren(el("h3", { text: "Canary" }), el("p", { text: "no canary runs (productstudio deploy canary)" }));
    return;
  }
  const split = canary.running ? `${canary.percent} % to the challenger v${canary.canary_version}, ` +
    `${100 - canary.percent} % to the champion v${canary.stable_version}` : "the proxy is not running";
  const sides = Object.entries(canary.sides || {}).map(([side, s]) => el("li", { "data-side": side,
    text: `${side} v${s.version}: ${s.torchserve.healthy ? "healthy" : "DOWN"}, ${s.requests ?? 0} requests, ` +
          `error rate ${fmt(s.error_rate ?? 0)}, p95 ${s.p95_ms == null ? "–" : fmt(s.p95_ms) + " ms"}` }));
  const button = el("button", { class: "danger", id: "rollback-button", text: "Roll back the canary" });
  button.disabled = !canary.running || canary.percent === 0;
  button.addEventListener("click", () => $("#rollback-dialog").showModal());
  box.replaceChildren(el("h3", { text: "Canary" }), el("p", { id: "canary-split", text: split }), el("ul", {}, ...sides),
    ...(canary.alerts || []).map((alert) => el("p", { class: "error", text: alert })), button);
}

$("#rollback-dialog").addEventListener("close", async () => {
  if ($("#rollback-dialog").returnValue !== "confirm") return;
  try {
    await postJSON("/api/canary/rollback", { confirm: true, reason: $("#rollback-reason").value });
  } catch (error) { showError(`rollback: ${error.message}`); }
  loadModels();
});

// --- start ---
(async () => {
  try {
    info = await api("/api/info");
  } catch (error) { showError(error.message); return; }
  $("#category").replaceChildren(...info.generator.categories.map((name) => el("option", { value: name, text: name })));
  const offered = new Set(info.editor.operations);
  for (const input of document.querySelectorAll("input[name=step], input[name=restyle]")) {
    if (input.value && !offered.has(input.value)) {
      input.disabled = true;
      input.parentElement.title = "the served edit model does not offer this (productstudio package --task edit --help)";
    }
  }
  $("#presets").replaceChildren(...info.editor.presets.map((name) => el("label", {},
    el("input", { type: "checkbox", name: "preset", value: name, ...(info.editor.default_presets.includes(name) ? { checked: "" } : {}) }),
    ` ${name}`)));
  $("#limits").textContent = `JPEG, PNG or WebP, up to ${(info.limits.max_upload_bytes / 1e6).toFixed(0)} MB and ` +
    `${(info.limits.max_pixels / 1e6).toFixed(0)} megapixels each. Your photos are never changed; results stay on this machine.`;
})();
