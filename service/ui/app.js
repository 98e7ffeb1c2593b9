// instructedit console: Ask, Edit and History views over the service's own HTTP API.
// Plain browser JavaScript, no build step and no dependencies. Every text that
// comes from the model or a user goes into the page as textContent, never as HTML.
"use strict";

const KEY_STORAGE = "instructedit.apiKey"; // sessionStorage: the key lives as long as the tab
const API_ROOT = new URL("..", location.href); // the console is served at <root>/ui/
const POLL_MS = 250;
const PROBE_TOKENS = 12;
const TERMINAL = new Set(["applied", "failed", "rolled_back"]);

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A DOM element: el("td", {class: "x", "data-label": "Status"}, child, "text", ...). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const short = (id) => (id || "").slice(0, 8);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const pct = (x) => (x === null || x === undefined ? "n/a" : `${Number(x).toFixed(Number.isInteger(x) ? 0 : 1)}%`);

// --------------------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, problem) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem || {};
  }
  /** "409 Conflict: version 0 is not served; ..." from the problem+json body. */
  describe() {
    const title = this.problem.title ? ` ${this.problem.title}` : "";
    return `${this.status}${title}: ${this.message}`;
  }
}

async function readBody(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

/** One API call. On a 401 the page asks for a key, keeps it for the tab and tries again. */
async function request(method, path, body) {
  for (;;) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const res = await fetch(new URL(path.replace(/^\//, ""), API_ROOT), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await readBody(res);
    if (res.status === 401 && (await askForKey(data, Boolean(key)))) continue;
    if (!res.ok) throw new ApiError(res.status, data);
    return { status: res.status, data };
  }
}
const api = {
  get: (path) => request("GET", path).then((r) => r.data),
  post: (path, body) => request("POST", path, body).then((r) => r.data),
  del: (path) => request("DELETE", path).then((r) => r.data),
};

function showProblem(box, err, prefix = "") {
  box.hidden = false;
  box.textContent = prefix + (err instanceof ApiError ? err.describe() : String(err.message || err));
}

// --------------------------------------------------------------------------- API key

let pendingKey = null; // one dialog for all the requests that got a 401 at once

function askForKey(problem, hadKey) {
  if (pendingKey) return pendingKey;
  const dialog = $("key-dialog");
  const input = $("key-input");
  const returnTo = document.activeElement;
  $("key-text").textContent =
    (hadKey ? "That key was refused" : "This service requires an API key") +
    (problem && problem.detail ? ` (${problem.detail}). ` : ". ") +
    "It is kept for this tab only (sessionStorage) and sent as a bearer token.";
  input.value = "";
  pendingKey = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = dialog.returnValue === "use" ? input.value.trim() : "";
        if (key) sessionStorage.setItem(KEY_STORAGE, key);
        else sessionStorage.removeItem(KEY_STORAGE);
        input.value = "";
        pendingKey = null;
        updateKeyState();
        if (returnTo && returnTo.focus) returnTo.focus();
        resolve(Boolean(key));
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return pendingKey;
}

function updateKeyState() {
  const has = Boolean(sessionStorage.getItem(KEY_STORAGE));
  $("key-state").textContent = has ? "API key set for this tab" : "No API key";
  $("key-forget").hidden = !has;
}

// --------------------------------------------------------------------------- tabs

const TABS = ["ask", "edit", "history"];

function selectTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = "ask";
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "history") refreshHistory();
}

function wireTabs() {
  for (const t of TABS) $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  document.querySelector('[role="tablist"]').addEventListener("keydown", (event) => {
    const current = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
    const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: TABS.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
  });
  window.addEventListener("hashchange", () => selectTab(location.hash.slice(1)));
}

// --------------------------------------------------------------------------- the model line

let model = null; // the last GET /model

async function refreshModel() {
  try {
    model = await api.get("/model");
    const edits = model.active_edits ? model.active_edits.length : 0;
    $("model-line").textContent =
      `${model.model} · version ${model.version} · ${edits} active edit${edits === 1 ? "" : "s"} · weights ${short(model.state_sha256)}`;
  } catch (err) {
    $("model-line").textContent = `The service did not answer: ${err.message}`;
  }
  return model;
}

// --------------------------------------------------------------------------- word differences

const words = (text) => text.split(/(\s+)/).filter((w) => w !== "");

/** Longest common subsequence of the words of a and b (whitespace kept as its own tokens). */
function wordDiff(a, b) {
  const x = words(a), y = words(b);
  const n = x.length, m = y.length;
  const table = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  const left = [], right = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      left.push([x[i++], "same"]);
      right.push([y[j++], "same"]);
    } else if (j < m && (i === n || table[i][j + 1] >= table[i + 1][j])) right.push([y[j++], "ins"]);
    else left.push([x[i++], "del"]);
  }
  return { left, right };
}

function renderDiff(node, parts) {
  node.replaceChildren(
    ...parts.map(([w, kind]) => (kind === "same" || /^\s+$/.test(w) ? document.createTextNode(w) : el(kind, {}, w))),
  );
  return parts.filter(([w, kind]) => kind !== "same" && !/^\s+$/.test(w)).length;
}

// --------------------------------------------------------------------------- Ask

const generate = (prompt, maxTokens, version) =>
  api.post("/generate", { prompt, max_new_tokens: maxTokens, ...(version === undefined ? {} : { version }) });

function askInputs() {
  return { prompt: $("ask-prompt").value, tokens: Number($("ask-tokens").value) || 24 };
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function wireAsk() {
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const { prompt, tokens } = askInputs();
    $("ask-error").hidden = true;
    busy($("ask-submit"), async () => {
      try {
        const out = await generate(prompt, tokens);
        $("ask-answer-title").textContent = `Version ${out.model_version} (newest) answers`;
        $("ask-answer-text").textContent = out.text;
        $("ask-answer").hidden = false;
        refreshModel();
      } catch (err) {
        showProblem($("ask-error"), err);
      }
    });
  });

  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const { prompt, tokens } = askInputs();
    const version = Number($("compare-version").value);
    $("compare-error").hidden = true;
    if (!$("ask-form").reportValidity()) return;
    busy($("compare-submit"), async () => {
      try {
        const [older, newest] = await Promise.all([generate(prompt, tokens, version), generate(prompt, tokens)]);
        const diff = wordDiff(older.text, newest.text);
        $("compare-left-title").textContent = `Version ${older.model_version}${older.model_version === 0 ? " (base)" : ""}`;
        $("compare-right-title").textContent = `Version ${newest.model_version} (newest)`;
        const changed = renderDiff($("compare-left"), diff.left) + renderDiff($("compare-right"), diff.right);
        $("compare-summary").textContent = changed
          ? `${changed} word${changed === 1 ? "" : "s"} differ: removed words are struck through on the left, added ones underlined on the right.`
          : "The two versions give the same answer.";
        $("compare").hidden = false;
      } catch (err) {
        $("compare").hidden = true;
        showProblem($("compare-error"), err, `Version ${version} could not be asked: `);
      }
    });
  });
}

// --------------------------------------------------------------------------- Edit

let probeCount = 0;

function addProbeRow(prompt = "", answer = "") {
  const n = ++probeCount;
  const row = el(
    "div",
    { class: "probe-row" },
    el("div", {}, el("label", { for: `probe-${n}-prompt` }, `Probe ${n}: prompt`),
      el("input", { id: `probe-${n}-prompt`, class: "probe-prompt", value: prompt, placeholder: "The capital of Japan is", autocomplete: "off" })),
    el("div", {}, el("label", { for: `probe-${n}-answer` }, "Its answer ", el("span", { class: "muted" }, "(blank: the model's own)")),
      el("input", { id: `probe-${n}-answer`, class: "probe-answer", value: answer, placeholder: "Tokyo", autocomplete: "off" })),
    el("button", { type: "button", class: "secondary", "aria-label": `Remove probe ${n}`, onclick: () => { row.remove(); $("probe-add").focus(); } }, "Remove"),
  );
  $("probe-rows").append(row);
  return row;
}

function editRequest() {
  const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
  const probes = [...document.querySelectorAll("#probe-rows .probe-row")]
    .map((row) => ({ prompt: row.querySelector(".probe-prompt").value.trim(), answer: row.querySelector(".probe-answer").value.trim() }))
    .filter((p) => p.prompt);
  const subject = $("edit-subject").value.trim();
  return {
    prompt: $("edit-prompt").value.trim(),
    target_new: $("edit-target").value.trim(),
    ...(subject ? { subject } : {}),
    rephrase_prompts: lines($("edit-rephrase").value),
    probes,
  };
}

/** The answer at the start of a continuation: up to its first full stop or line end, at most 6 words. */
const leadingAnswer = (text) => text.trim().split("\n")[0].split(/(?<=[.!?])\s/)[0].split(/\s+/).slice(0, 6).join(" ");
/** A probe's answer when none is given: the model's own (its locality then measures whether the edit keeps it). */
const ownAnswer = (text) => leadingAnswer(text) || text.trim() || ".";

function setSteps(status) {
  const order = ["queued", "running", "applied"];
  const at = status === "failed" ? 1 : order.indexOf(status);
  for (const li of $("edit-steps").children) {
    const i = order.indexOf(li.dataset.step);
    li.className = at < 0 || i > at ? "" : i < at ? "done" : status === "failed" ? "failed" : "current";
    li.textContent = status === "failed" && i === 1 ? "failed" : li.dataset.step;
    if (i === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

/** GET /edits/{id} until its status is one of `until` (or `patienceMs` passed); onStatus on each change. */
async function pollEdit(id, onStatus, { until = TERMINAL, patienceMs = 10 * 60_000 } = {}) {
  const deadline = Date.now() + patienceMs;
  let last = null;
  for (;;) {
    const edit = await api.get(`/edits/${id}`);
    if (edit.status !== last) onStatus(edit);
    last = edit.status;
    if (until.has(edit.status) || Date.now() > deadline) return edit;
    await sleep(POLL_MS);
  }
}

async function pollMetrics(id) {
  for (;;) {
    const res = await request("GET", `/edits/${id}/metrics`);
    if (res.status === 200) return res.data;
    await sleep(POLL_MS * 2);
  }
}

// Names for the scores whose field name alone misleads: the teacher-forced ones say so (the
// issue's rule: generation first, teacher forcing labelled), and the strict subject figure says it
// counts answers unchanged word for word (a kept answer that now mentions the edit counts as changed).
const SCORE_LABELS = {
  subject_locality_generation: "subject answers unchanged word for word (chat)",
  subject_hijack: "subject questions answered with the target (chat)",
  subject_mentions: "subject answers that name the target (chat)",
  reliability: "reliability (teacher-forced)",
  generalization: "generalization (teacher-forced)",
  locality: "locality (teacher-forced)",
  portability: "portability (teacher-forced)",
  probe_locality: "probe locality (teacher-forced)",
};

/** Every {before, after, n} object in a metrics response, wherever it is nested: sets added later draw too. */
function scoreEntries(obj, path = []) {
  const out = [];
  for (const [name, value] of Object.entries(obj || {})) {
    if (!value || typeof value !== "object") continue;
    const key = [...path, name].join(".");
    if ("before" in value || "after" in value) out.push({ name: SCORE_LABELS[key] || [...path, name].join(" · ").replaceAll("_", " "), key, ...value });
    else out.push(...scoreEntries(value, [...path, name]));
  }
  return out;
}

function renderBars(node, metrics) {
  const entries = scoreEntries(metrics);
  const lane = (kind, value) =>
    el("div", { class: "track" },
      el("div", { class: "lane" }, el("div", { class: `bar ${kind}`, style: `width: ${Math.max(0, Math.min(100, value ?? 0))}%` })),
      el("span", { class: `value ${kind}` }, `${kind === "before" ? "before" : "after"} ${pct(value)}`));
  node.replaceChildren(
    ...entries.map((e) =>
      el("div", { class: "metric", "data-metric": e.key, role: "group", "aria-label": `${e.name}: before ${pct(e.before)}, after ${pct(e.after)}, ${e.n ?? "?"} pairs` },
        el("div", { class: "name" }, e.name, el("small", {}, e.n === undefined ? "" : `${e.n} pair${e.n === 1 ? "" : "s"}`)),
        el("div", { class: "pair", "aria-hidden": "true" }, lane("before", e.before), lane("after", e.after)))),
  );
  if (!entries.length) node.replaceChildren(el("p", { class: "hint" }, "This response has no scores."));
}

function renderProbes(rows, beforeVersion, afterVersion, note) {
  $("edit-probes-title").textContent = `Answers before (v${beforeVersion}) and after (v${afterVersion})`;
  const body = $("probe-table");
  body.replaceChildren(
    ...rows.map((r) => {
      const diff = wordDiff(r.before, r.after);
      const before = el("span", { class: "gen" }), after = el("span", { class: "gen" });
      renderDiff(before, diff.left);
      renderDiff(after, diff.right);
      const changed = leadingAnswer(r.before) !== leadingAnswer(r.after);
      const wanted = r.kind !== "unrelated probe";
      const verdict = changed ? (wanted ? "changed" : "changed (unwanted)") : wanted ? "unchanged" : "unchanged (good)";
      return el("tr", { "data-kind": r.kind, "data-changed": String(changed) },
        el("td", { "data-label": "Prompt" }, r.prompt),
        el("td", { "data-label": "Kind" }, r.kind),
        el("td", { "data-label": "Before" }, before),
        el("td", { "data-label": "After" }, after),
        el("td", { "data-label": "Answer changed", class: changed !== wanted ? "changed-yes" : "changed-ok" }, verdict));
    }),
  );
  const hint = $("edit-probes").querySelector(".hint");
  hint.textContent =
    "Greedy continuations on the version before the edit and on the version it produced, the differing words marked. " +
    "“Changed” compares the answer they start with (up to the first full stop, at most 6 words)." + (note ? ` ${note}` : "");
  $("edit-probes").hidden = false;
}

function wireEdit() {
  addProbeRow();
  $("probe-add").addEventListener("click", () => addProbeRow().querySelector("input").focus());
  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    for (const id of ["edit-error", "edit-scores", "edit-probes"]) $(id).hidden = true;
    busy($("edit-submit"), () =>
      submitEdit(editRequest()).catch((err) => {
        $("edit-status").textContent = "";
        $("edit-progress").hidden = true;
        showProblem($("edit-error"), err);
      }),
    );
  });
}

async function submitEdit(req) {
  const status = $("edit-status");
  // The answers to compare, asked now, on the version the edit will be applied on top of.
  const asked = [
    { prompt: req.prompt, kind: "edited prompt" },
    ...req.rephrase_prompts.map((p) => ({ prompt: p, kind: "rephrasing" })),
    ...req.probes.map((p) => ({ prompt: p.prompt, kind: "unrelated probe", answer: p.answer })),
  ];
  status.textContent = "Asking the current version first, to compare after the edit…";
  $("edit-progress").hidden = false;
  setSteps(null);
  const before = await Promise.all(asked.map((a) => generate(a.prompt, PROBE_TOKENS)));
  const beforeVersion = before.length ? before[0].model_version : null;

  const body = {
    prompt: req.prompt,
    target_new: req.target_new,
    ...(req.subject ? { subject: req.subject } : {}),
    rephrase_prompts: req.rephrase_prompts,
    locality: req.probes.map((p, i) => ({ prompt: p.prompt, answer: p.answer || ownAnswer(before[1 + req.rephrase_prompts.length + i].text) })),
  };
  const accepted = await api.post("/edits", body);
  const id = accepted.id;
  const edit = await pollEdit(id, (e) => {
    setSteps(e.status);
    status.textContent =
      e.status === "applied" ? `Edit ${short(id)} applied: the model is now version ${e.version}.`
      : e.status === "failed" ? `Edit ${short(id)} failed: ${e.error || "no reason given"}`
      : e.status === "rolled_back" ? `Edit ${short(id)} was rolled back.`
      : `Edit ${short(id)}: ${e.status}…`;
  });
  await refreshModel();
  refreshVersions();
  if (edit.status !== "applied") return;

  $("edit-scores").hidden = false;
  $("edit-bars").replaceChildren(el("p", { class: "hint" }, "Measuring the scores…"));
  const [metrics, after] = await Promise.all([
    pollMetrics(id),
    Promise.all(asked.map((a) => generate(a.prompt, PROBE_TOKENS, edit.version).catch((err) => ({ error: err })))),
  ]);
  if (metrics.metrics) renderBars($("edit-bars"), metrics.metrics);
  else $("edit-bars").replaceChildren(el("p", { class: "hint" }, metrics.detail || "No scores for this edit."));

  const failed = after.find((a) => a.error);
  if (failed) {
    renderProbes([], beforeVersion, edit.version, `Version ${edit.version} could not be asked: ${failed.error.message}`);
    return;
  }
  const rows = asked.map((a, i) => ({ ...a, before: before[i].text, after: after[i].text }));
  renderProbes(rows, beforeVersion, edit.version, beforeVersion !== edit.version - 1 ? `(Other edits landed in between: v${beforeVersion} was the version when you submitted.)` : "");
}

// --------------------------------------------------------------------------- History

const history_ = { items: [], cursor: null, scores: new Map(), loading: false, again: undefined };
const AUTHOR_FIELDS = ["author", "key_name", "created_by", "key"];

function authorOf(edit) {
  for (const f of AUTHOR_FIELDS) if (edit[f]) return typeof edit[f] === "object" ? edit[f].name || JSON.stringify(edit[f]) : edit[f];
  return "—";
}

async function loadEdits(reset) {
  if (history_.loading) {
    history_.again = history_.again || reset; // a filter changed mid-request: load again when it ends
    return;
  }
  history_.loading = true;
  try {
    const params = new URLSearchParams({ limit: "20" });
    const status = $("history-status").value;
    if (status) params.set("status", status);
    if (!reset && history_.cursor) params.set("cursor", history_.cursor);
    const page = await api.get(`/edits?${params}`);
    history_.items = reset ? page.items : [...history_.items, ...page.items];
    history_.cursor = page.next_cursor;
    $("history-more").hidden = !page.next_cursor;
    renderEdits();
  } catch (err) {
    $("history-status-line").textContent = `Could not list the edits: ${err.message}`;
  } finally {
    history_.loading = false;
    if (history_.again !== undefined) {
      const again = history_.again;
      history_.again = undefined;
      loadEdits(again);
    }
  }
}

function matches(edit, query) {
  if (!query) return true;
  const hay = [edit.id, edit.status, authorOf(edit), ...edit.records.flatMap((r) => [r.prompt, r.target_new, r.subject || ""])].join("\n").toLowerCase();
  return query.toLowerCase().split(/\s+/).filter(Boolean).every((q) => hay.includes(q));
}

function renderEdits() {
  const query = $("history-search").value.trim();
  const shown = history_.items.filter((e) => matches(e, query));
  $("history-rows").replaceChildren(...shown.map(editRow));
  if (!history_.items.length) $("history-rows").append(el("tr", {}, el("td", { colspan: 7 }, "No edits yet.")));
  else if (!shown.length) $("history-rows").append(el("tr", {}, el("td", { colspan: 7 }, `No loaded edit matches “${query}”.`)));
  for (const e of shown) if (e.version !== null && !history_.scores.has(e.id)) loadScores(e.id);
}

function editRow(edit) {
  const first = edit.records[0] || {};
  const more = edit.n_records > 1 ? ` (+${edit.n_records - 1} more)` : "";
  const canRollBack = ["queued", "running", "applied"].includes(edit.status);
  const version = edit.version === null ? "—" : `v${edit.version}` + (edit.rollback_version !== null ? ` → removed in v${edit.rollback_version}` : "");
  return el("tr", { "data-edit": edit.id, "data-status": edit.status },
    el("td", { "data-label": "Edit" }, el("span", { class: "edit-prompt" }, `${first.prompt} → ${first.target_new}${more}`), el("span", { class: "edit-id" }, edit.id)),
    el("td", { "data-label": "Status" }, el("span", { class: `status ${edit.status}` }, edit.status.replace("_", " ")), edit.error ? el("div", { class: "hint" }, edit.error) : null),
    el("td", { "data-label": "Version" }, version),
    el("td", { "data-label": "Author" }, authorOf(edit)),
    el("td", { "data-label": "Queued" }, when(edit.queued_at)),
    el("td", { "data-label": "Scores", class: "scores" }, scoresCell(edit)),
    el("td", {}, canRollBack
      ? el("button", { type: "button", class: "danger", "aria-label": `Roll back edit ${short(edit.id)}: ${first.prompt} → ${first.target_new}`, onclick: (ev) => confirmRollback(edit, ev.currentTarget) }, "Roll back")
      : null),
  );
}

function scoresCell(edit) {
  if (edit.version === null) return "—";
  const got = history_.scores.get(edit.id);
  if (!got) return el("span", { class: "hint" }, "…");
  if (!got.metrics) return el("span", { class: "hint" }, got.detail || "not ready");
  return el("ul", { class: "mini" }, ...scoreEntries(got.metrics).filter((e) => e.n).map((e) => el("li", {}, `${e.name}: ${pct(e.before)} → ${pct(e.after)}`)));
}

async function loadScores(id) {
  history_.scores.set(id, { detail: "…" });
  try {
    const res = await request("GET", `/edits/${id}/metrics`);
    if (res.status === 200) history_.scores.set(id, res.data);
    else {
      history_.scores.set(id, { detail: "being measured" });
      setTimeout(() => { if (!$("panel-history").hidden) loadScores(id); }, 1000);
    }
  } catch (err) {
    history_.scores.set(id, { detail: err.message });
  }
  const cell = document.querySelector(`tr[data-edit="${id}"] td.scores`);
  const edit = history_.items.find((e) => e.id === id);
  if (cell && edit) cell.replaceChildren(scoresCell(edit));
}

function confirmRollback(edit, button) {
  const dialog = $("rollback-dialog");
  const first = edit.records[0] || {};
  $("rollback-text").textContent =
    `Edit ${short(edit.id)} (“${first.prompt}” → “${first.target_new}”) will be taken out: ` +
    (edit.status === "applied" ? "a new version is built from the base without it. The other edits stay." : "it has not been applied yet and will be cancelled.");
  dialog.addEventListener("close", () => {
    button.focus();
    if (dialog.returnValue === "confirm") rollBack(edit);
  }, { once: true });
  dialog.returnValue = "";
  dialog.showModal();
}

async function rollBack(edit) {
  const line = $("history-status-line");
  line.textContent = `Rolling back edit ${short(edit.id)}…`;
  try {
    await api.del(`/edits/${edit.id}`);
    const done = await pollEdit(edit.id, () => {}, { until: new Set(["rolled_back", "failed"]), patienceMs: 120_000 });
    line.textContent = done.status === "rolled_back"
      ? `Edit ${short(edit.id)} rolled back` + (done.rollback_version !== null ? `: the model is now version ${done.rollback_version}.` : " before it was applied.")
      : `Edit ${short(edit.id)} is still ${done.status}: the roll back is queued; refresh to see it.`;
  } catch (err) {
    line.textContent = `Could not roll back edit ${short(edit.id)}: ${err instanceof ApiError ? err.describe() : err.message}`;
  }
  refreshHistory();
}

// --------------------------------------------------------------------------- versions and health

const versions_ = { items: [], cursor: null };

const CAUSES = { edit: "edit", rollback: "roll back of", refit: "refit of" };

function causeText(cause) {
  const [kind, id] = cause.split(":");
  if (kind === "base") return "the base model";
  return id && CAUSES[kind] ? `${CAUSES[kind]} ${short(id)}` : cause;
}

async function refreshVersions(older = false) {
  try {
    const params = new URLSearchParams({ limit: "50" });
    if (older && versions_.cursor !== null) params.set("before", String(versions_.cursor));
    const page = await api.get(`/versions?${params}`);
    versions_.items = older ? [...versions_.items, ...page.items] : page.items;
    versions_.cursor = page.next_cursor;
  } catch (err) {
    $("versions").replaceChildren(el("li", {}, `Could not list versions: ${err.message}`));
    return;
  }
  $("versions-more").hidden = versions_.cursor === null;
  const current = model ? model.version : versions_.items.length ? versions_.items[0].version : null;
  $("versions").replaceChildren(
    ...versions_.items.map((v) =>
      el("li", { class: v.version === current ? "current" : null, "data-version": v.version, "aria-current": v.version === current ? "true" : null },
        el("strong", {}, `v${v.version}`), ` ${causeText(v.cause)} · ${v.active_count} active`,
        v.version === current ? el("span", { class: "muted" }, " · served now") : null,
        el("div", { class: "hash", title: v.state_sha256 }, `state ${v.state_sha256}`),
        el("div", { class: "when" }, when(v.created_at)))),
  );
  // The compare menu: every version (newest first), the base chosen until the user picks another.
  const select = $("compare-version");
  const chosen = select.value;
  select.replaceChildren(
    ...versions_.items.map((v) => el("option", { value: v.version }, `v${v.version}: ${causeText(v.cause)}${v.version === current ? " (served now)" : ""}`)),
  );
  if (![...select.options].some((o) => o.value === "0")) select.append(el("option", { value: 0 }, "v0: the base model"));
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "0";
}

const HEALTH_LABELS = { model: "Model", version: "Version served", state_sha256: "Weights (sha256)", active_edits: "Active edits", editor: "Editor", device: "Device", dtype: "Data type", memory: "How edits are held", health: "Health" };

// GET /model's `health` in words: the capability set, the largest weight change a question meets, background work.
function healthText(h) {
  const parts = [];
  if (h.capability_pending) parts.push("capability set: being measured");
  else if (h.capability !== null && h.capability !== undefined) {
    const routed = h.capability_routed_into_edits ? `, ${h.capability_routed_into_edits} of them routed into an edit` : "";
    parts.push(`capability set: ${Number(h.capability).toFixed(1)} % of ${h.capability_n} answers as unedited${routed}`);
  }
  if (typeof h.max_norm_ratio === "number") parts.push(`largest ‖ΔW‖/‖W‖ a question meets: ${h.max_norm_ratio.toFixed(3)}`);
  if (typeof h.background_pending === "number")
    parts.push(h.background_pending ? `${h.background_pending} background job${h.background_pending === 1 ? "" : "s"} (refit, check, scoring) queued or running` : "no background work");
  return parts.join(" · ");
}

function healthValue(key, value) {
  if (key === "active_edits") return `${value.length}${value.length ? `: ${value.map(short).join(", ")}` : ""}`;
  if (key === "health") return value && typeof value === "object" ? healthText(value) : "not reported";
  if (key === "editor" && value && typeof value === "object")
    return `${value.tag}${value.trained === false ? " (untrained)" : ""}${value.instruct ? ", instructed" : ""}${value.path ? ` · ${value.path}` : ""}`;
  if (value && typeof value === "object") return Object.entries(value).map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
  return String(value);
}

function renderHealth() {
  if (!model) return;
  $("health").replaceChildren(
    ...Object.entries(model).flatMap(([key, value]) => [
      el("dt", {}, HEALTH_LABELS[key] || key.replaceAll("_", " ")),
      el("dd", { class: key.endsWith("sha256") ? "hash" : null, "data-field": key }, healthValue(key, value)),
    ]),
  );
}

async function refreshHistory() {
  await refreshModel();
  renderHealth();
  await Promise.all([loadEdits(true), refreshVersions()]);
}

function wireHistory() {
  $("history-status").addEventListener("change", () => loadEdits(true));
  $("history-search").addEventListener("input", renderEdits);
  $("history-filter").addEventListener("submit", (e) => e.preventDefault());
  $("history-refresh").addEventListener("click", refreshHistory);
  $("history-more").addEventListener("click", () => loadEdits(false));
  $("versions-more").addEventListener("click", () => refreshVersions(true));
}

// --------------------------------------------------------------------------- start

function wireDialogs() {
  $("rollback-cancel").addEventListener("click", () => $("rollback-dialog").close("cancel"));
  $("key-cancel").addEventListener("click", () => $("key-dialog").close("cancel"));
  $("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORAGE); updateKeyState(); });
}

document.addEventListener("DOMContentLoaded", async () => {
  wireDialogs();
  wireTabs();
  wireAsk();
  wireEdit();
  wireHistory();
  updateKeyState();
  selectTab(location.hash.slice(1) || "ask");
  await refreshModel();
  refreshVersions();
  document.body.dataset.ready = "true";
});
