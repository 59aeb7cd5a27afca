// The facecast control panel: plain script, no build step, every request to the daemon that served it.
// Live data comes from the WebSocket (/ws: state, actions, stats once a second), which reconnects by
// itself with back-off. Everything kept in memory is bounded: the chart's ring buffers, the last
// messages, the upload notes, one thumbnail per character, one preview frame.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LAYOUT = document.body.dataset.layout;
  const TOKEN_KEY = "facecast.token"; // sessionStorage: kept for this browser session only
  const CHART_POINTS = 120;
  const LOG_LINES = 50;
  const UPLOAD_NOTES = 6;
  const JOBS_SHOWN = 10;
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 5000;
  const SLIDER_SEND_MS = 120; // a dragged slider sends at most this often (the newest value wins)

  let token = sessionStorage.getItem(TOKEN_KEY);
  let session = null; // this run's session secret (GET /session): proves a change comes from this page
  let info = null; // GET /panel/info
  let settingsInfo = null; // GET /settings
  let state = null; // the last `state` message
  let ws = null;
  let retryMs = RETRY_FIRST_MS;
  let retryTimer = null;
  let starting = false;

  // ---- HTTP -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function headers(extra = {}) {
    const h = { ...extra };
    if (token) h.Authorization = "Bearer " + token;
    if (session) h["X-Facecast-Session"] = session;
    return h;
  }

  async function request(method, path, body, { form = null, raw = false, retried = false } = {}) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (form) init.body = form;
    else if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const r = await fetch(path, init);
    if (r.status === 401) {
      const reason = await errorOf(r);
      askToken(token ? reason : "");
      throw new ApiError(reason, 401);
    }
    if (r.status === 403 && method !== "GET" && !retried) { // the daemon restarted: a new session secret
      await loadSession();
      return request(method, path, body, { form, raw, retried: true });
    }
    if (!r.ok) throw new ApiError(await errorOf(r), r.status);
    if (raw) return r;
    return (r.headers.get("content-type") || "").includes("json") ? r.json() : r.text();
  }

  async function errorOf(r) {
    try { const body = await r.json(); return body.error || `HTTP ${r.status}`; } catch { return `HTTP ${r.status}`; }
  }

  const get = (path) => request("GET", path);
  const post = (path, body, opts) => request("POST", path, body, opts);

  async function blobUrl(path) {
    const r = await request("GET", path, undefined, { raw: true });
    return URL.createObjectURL(await r.blob());
  }

  async function loadSession() {
    try { session = (await get("/session")).session; } catch (e) { if (e.status === 404) session = null; else throw e; }
  }

  // ---- token ------------------------------------------------------------------------------------
  function askToken(reason) {
    closeSocket();
    stopPreview();
    $("token-error").textContent = reason || "";
    $("token-form").hidden = false;
    setConn("token needed", "down");
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    start();
  });

  // ---- connection -------------------------------------------------------------------------------
  function setConn(text, kind) {
    const el = $("conn");
    el.textContent = text;
    el.className = "conn " + kind;
  }

  async function start() {
    if (starting) return;
    starting = true;
    clearTimeout(retryTimer);
    try {
      await loadSession();
      [info, settingsInfo] = await Promise.all([get("/panel/info"), get("/settings")]);
      renderJobsForm();
      connect();
      if (previewWanted) startPreview();
      refreshJobs();
    } catch (e) {
      if (e.status !== 401) scheduleReconnect(e.message);
    } finally {
      starting = false;
    }
  }

  function connect() {
    closeSocket();
    const q = new URLSearchParams({ interval: "1" });
    if (token) q.set("token", token);
    if (session) q.set("session", session);
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?${q}`);
    ws = socket;
    socket.onopen = () => {
      retryMs = RETRY_FIRST_MS;
      setConn("live", "up");
      note(`connected to facecast ${info ? info.version : ""} at ${location.host}`);
    };
    socket.onmessage = (e) => handle(JSON.parse(e.data));
    socket.onclose = (e) => {
      if (ws !== socket) return; // replaced on purpose
      ws = null;
      if (e.code === 1008 && /token/i.test(e.reason)) { askToken(e.reason); return; }
      scheduleReconnect(e.reason || "connection lost");
    };
  }

  function closeSocket() {
    if (ws) { const old = ws; ws = null; old.close(); }
  }

  function scheduleReconnect(reason) {
    clearTimeout(retryTimer);
    const wait = retryMs * (0.8 + 0.4 * Math.random());
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    setConn(`offline (${reason}); retrying in ${Math.ceil(wait / 1000)} s`, "down");
    retryTimer = setTimeout(start, wait);
  }

  function handle(msg) {
    if (msg.type === "state") renderState(msg.state);
    else if (msg.type === "stats") renderStats(msg.stats);
    else if (msg.type === "action") {
      note(`[${msg.source}] ${msg.message}`);
      if (msg.action === "effect") reloadSettings(); // a backend's settings differ from another's
    } else if (msg.type === "result" && !msg.ok) note(msg.error, true);
  }

  // ---- messages ---------------------------------------------------------------------------------
  function note(text, isError = false) {
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
    if (isError) li.className = "error";
    const log = $("log");
    log.prepend(li);
    while (log.children.length > LOG_LINES) log.lastChild.remove();
  }

  async function act(name, args) {
    try {
      const result = await post(`/actions/${name}`, args);
      return result;
    } catch (e) {
      if (e.status !== 401) note(`${name}: ${e.message}`, true);
      throw e;
    }
  }

  // ---- state ------------------------------------------------------------------------------------
  function renderState(s) {
    const previous = state;
    state = s;
    $("stopping").hidden = !s.stopping;
    pressed($("freeze"), s.frozen);
    pressed($("overlay"), s.debug_overlay);
    $("recalibrate").disabled = !s.can_recalibrate;
    renderCharacters(s);
    renderEffects(s);
    if (!previous || previous.effect !== s.effect) renderSettings();
    else updateSettingValues();
    renderOutputs(s);
    renderHotkeys(s.hotkeys || {});
    renderJobCharacters(s);
  }

  function pressed(button, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  $("freeze").addEventListener("click", () => act("freeze", { on: !state.frozen }).catch(() => {}));
  $("overlay").addEventListener("click", () => act("debug_overlay", { on: !state.debug_overlay }).catch(() => {}));
  $("recalibrate").addEventListener("click", () => act("recalibrate").catch(() => {}));

  // ---- characters -------------------------------------------------------------------------------
  const thumbs = new Map(); // name -> blob URL (one per character; revoked when it leaves)

  function renderCharacters(s) {
    const list = $("characters");
    const names = s.characters || [];
    const active = s.character ? s.character.name : null;
    for (const [name, url] of thumbs) {
      if (!names.includes(name)) { URL.revokeObjectURL(url); thumbs.delete(name); }
    }
    const shown = [...list.children].map((li) => li.dataset.name);
    if (shown.join("\n") !== names.join("\n")) {
      list.replaceChildren(...names.map((name, i) => characterItem(name, i + 1)));
    }
    for (const li of list.children) {
      const on = li.dataset.name === active;
      li.classList.toggle("active", on);
      pressed(li.querySelector(".pick"), on);
    }
  }

  function characterItem(name, position) {
    const li = document.createElement("li");
    li.dataset.name = name;
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "pick";
    pick.title = `switch to ${name} (hotkey position ${position})`;
    const img = document.createElement("img");
    img.alt = "";
    img.width = img.height = 80;
    const label = document.createElement("span");
    label.textContent = `${position <= 9 ? position + " " : ""}${name}`;
    pick.append(img, label);
    pick.addEventListener("click", () => act("character", { key: name }).catch(() => {}));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `remove ${name}`);
    let armed = null; // two clicks: CEF has no confirm() dialog worth relying on
    remove.addEventListener("click", async () => {
      if (!armed) {
        remove.textContent = "remove?";
        armed = setTimeout(() => { armed = null; remove.textContent = "×"; }, 3000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      try {
        const r = await request("DELETE", `/characters/${encodeURIComponent(name)}`);
        note(r.message);
      } catch (e) { if (e.status !== 401) note(`remove ${name}: ${e.message}`, true); }
    });
    li.append(pick, remove);
    const cached = thumbs.get(name);
    if (cached) img.src = cached;
    else {
      blobUrl(`/characters/${encodeURIComponent(name)}/thumbnail.png?size=160`).then((url) => {
        if (thumbs.has(name)) URL.revokeObjectURL(thumbs.get(name));
        thumbs.set(name, url);
        img.src = url;
      }).catch(() => { img.alt = "(no picture)"; });
    }
    return li;
  }

  // Uploads: the file input, or files dropped anywhere on the panel.
  $("character-file").addEventListener("change", (e) => {
    for (const file of e.target.files) uploadCharacter(file);
    e.target.value = "";
  });

  function uploadNote(name) {
    const li = document.createElement("li");
    const file = document.createElement("span");
    file.className = "file";
    file.textContent = name;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = "checking…";
    li.append(file, status);
    const list = $("uploads");
    list.prepend(li);
    while (list.children.length > UPLOAD_NOTES) list.lastChild.remove();
    return (text, isError) => { status.textContent = text; li.classList.toggle("error", !!isError); };
  }

  async function uploadCharacter(file) {
    const say = uploadNote(file.name);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await post("/characters", undefined, { form });
      say(r.message);
    } catch (e) {
      say(e.message, true);
    }
  }

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth += 1;
    $("drop-overlay").hidden = false;
  });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop-overlay").hidden = true;
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    $("drop-overlay").hidden = true;
    for (const file of e.dataTransfer.files) {
      if (file.type.startsWith("video/")) uploadJobVideo(file);
      else uploadCharacter(file);
    }
  });

  // ---- effect and its live settings -------------------------------------------------------------
  function renderEffects(s) {
    const box = $("effects");
    if (box.children.length !== s.effects.length) {
      box.replaceChildren(...s.effects.map((name) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = name;
        b.dataset.effect = name;
        b.addEventListener("click", () => act("effect", { name }).catch(() => {}));
        return b;
      }));
    }
    for (const b of box.children) pressed(b, b.dataset.effect === s.effect);
  }

  async function reloadSettings() {
    try { settingsInfo = await get("/settings"); updateSettingValues(); } catch { /* the socket says why */ }
  }

  function renderSettings() {
    const box = $("settings");
    const effect = state && settingsInfo && settingsInfo.effects[state.effect];
    if (!effect || !effect.settings.length) {
      box.replaceChildren(text("p", state ? `${state.effect} has no live settings` : "", "hint"));
      return;
    }
    box.replaceChildren(...effect.settings.map(settingControl));
    updateSettingValues();
  }

  function text(tag, content, cls) {
    const el = document.createElement(tag);
    el.textContent = content;
    if (cls) el.className = cls;
    return el;
  }

  const bgrToHex = (v) => "#" + [v[2], v[1], v[0]].map((c) => Number(c).toString(16).padStart(2, "0")).join("");
  const hexToBgr = (h) => [5, 3, 1].map((i) => parseInt(h.slice(i, i + 2), 16));

  function settingControl(s) {
    const row = document.createElement("div");
    row.className = "setting";
    row.dataset.key = s.key;
    const id = "set-" + s.key.replace(/\W/g, "-");
    const label = text("label", s.name, "name");
    label.htmlFor = id;
    label.title = s.description;
    let input;
    const shown = text("output", "", "value");
    shown.htmlFor = id;
    const error = text("span", "", "error");
    error.setAttribute("role", "alert");
    if (s.kind === "number" || s.kind === "integer") {
      input = document.createElement("input");
      input.type = "range";
      input.min = s.min;
      input.max = s.max;
      input.step = s.step;
    } else if (s.kind === "switch") {
      input = document.createElement("input");
      input.type = "checkbox";
    } else if (s.kind === "choice") {
      input = document.createElement("select");
      for (const c of s.choices) input.append(new Option(c, c));
    } else { // color: the config holds blue, green, red
      input = document.createElement("input");
      input.type = "color";
    }
    input.id = id;
    input.setAttribute("aria-describedby", id + "-help");
    const help = text("span", s.description, "help");
    help.id = id + "-help";
    const valueOf = () => {
      if (s.kind === "switch") return input.checked;
      if (s.kind === "choice") return input.value;
      if (s.kind === "color") return hexToBgr(input.value);
      return Number(input.value);
    };
    const showValue = (v) => { shown.textContent = s.kind === "number" || s.kind === "integer" ? String(v) : ""; };
    // Sends the newest value at most every SLIDER_SEND_MS while dragging, and the last one always.
    let timer = null;
    let inFlight = false;
    let pending = false;
    const send = async () => {
      timer = null;
      if (inFlight) { pending = true; return; }
      inFlight = true;
      try {
        await post("/actions/set", { key: s.key, value: valueOf() });
        error.textContent = "";
      } catch (e) {
        error.textContent = e.message;
      } finally {
        inFlight = false;
        if (pending) { pending = false; send(); }
      }
    };
    let touched = -Infinity; // when the user last moved it: the daemon's echo must not pull it back meanwhile
    input.addEventListener("input", () => {
      touched = performance.now();
      showValue(valueOf());
      if (!timer) timer = setTimeout(send, SLIDER_SEND_MS);
    });
    input.addEventListener("change", () => { clearTimeout(timer); send(); });
    row._set = (v) => {
      if (timer || inFlight || pending || performance.now() - touched < 1500) return; // the user is changing it
      if (s.kind === "switch") input.checked = !!v;
      else if (s.kind === "color") input.value = bgrToHex(v);
      else input.value = v;
      showValue(v);
    };
    row.append(label, input, shown, help, error);
    return row;
  }

  function updateSettingValues() {
    if (!state || !state.settings) return;
    for (const row of $("settings").children) {
      if (row._set && row.dataset.key in state.settings) row._set(state.settings[row.dataset.key]);
    }
  }

  // ---- outputs ----------------------------------------------------------------------------------
  let lastStats = null;

  function renderOutputs(s) {
    const list = $("outputs");
    const names = Object.keys(s.outputs || {});
    if ([...list.children].map((li) => li.dataset.name).join("\n") !== names.join("\n")) {
      list.replaceChildren(...names.map(outputItem));
    }
    for (const li of list.children) {
      const o = s.outputs[li.dataset.name];
      pressed(li.querySelector("button"), o.enabled);
      li.classList.toggle("on", o.enabled);
      li.querySelector(".path").textContent = o.enabled && o.path ? o.path : "";
    }
    renderOutputFigures();
  }

  function outputItem(name) {
    const li = document.createElement("li");
    li.dataset.name = name;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `${name} (${state.outputs[name].type})`;
    b.addEventListener("click", async () => {
      const on = !state.outputs[name].enabled;
      try {
        await act("output", { name, on });
        li.querySelector(".error").textContent = "";
      } catch (e) { li.querySelector(".error").textContent = e.message; }
    });
    li.append(b, text("span", "", "figures"), text("span", "", "path"), text("span", "", "error"));
    return li;
  }

  function renderOutputFigures() {
    if (!state) return;
    const figures = (lastStats && lastStats.outputs) || {};
    for (const li of $("outputs").children) {
      const f = figures[li.dataset.name];
      const o = state.outputs[li.dataset.name];
      let words = "";
      if (f && o && o.enabled) {
        words = `${f.state}, ${Number(f.fps).toFixed(1)} fps`;
        if (f.receivers !== undefined) words += `, ${f.receivers} receiver${f.receivers === 1 ? "" : "s"}`;
        if (o.type === "record" && lastStats.fps > 0) words += `, ~${clock(f.sent / lastStats.fps)} recorded`;
        if (f.dropped) words += `, ${f.dropped} dropped`;
      }
      li.querySelector(".figures").textContent = words;
    }
  }

  const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

  // ---- hotkeys ----------------------------------------------------------------------------------
  let hotkeysShown = "";
  function renderHotkeys(h) {
    const key = JSON.stringify(h);
    if (key === hotkeysShown) return;
    hotkeysShown = key;
    $("hotkeys-status").textContent = h.listening ? "listening" : `not listening: ${h.reason || "off"}`;
    const rows = Object.entries(h.bindings || {}).map(([keys, command]) => {
      const tr = document.createElement("tr");
      tr.append(text("td", keys), text("td", command));
      return tr;
    });
    $("hotkeys").tBodies[0].replaceChildren(...rows);
  }

  // ---- live figures and the chart ---------------------------------------------------------------
  const fpsSeries = new Float32Array(CHART_POINTS);
  const latencySeries = new Float32Array(CHART_POINTS);
  let chartNext = 0;
  let chartCount = 0;

  function renderStats(st) {
    lastStats = st;
    const latency = st.latency_ms && st.latency_ms.p50;
    const dropped = Object.values(st.dropped || {}).reduce((a, b) => a + b, 0);
    $("fig-fps").textContent = Number(st.fps).toFixed(1);
    $("fig-latency").textContent = latency == null ? "–" : `${latency.toFixed(0)} ms`;
    $("fig-dropped").textContent = String(dropped);
    $("fig-faces").textContent = String(st.faces);
    fpsSeries[chartNext] = st.fps;
    latencySeries[chartNext] = latency == null ? NaN : latency;
    chartNext = (chartNext + 1) % CHART_POINTS;
    chartCount = Math.min(chartCount + 1, CHART_POINTS);
    drawChart();
    renderOutputFigures();
    if (st.jobs && typeof st.jobs === "object") jobProgress(st.jobs);
  }

  function drawChart() {
    const canvas = $("chart");
    const width = canvas.clientWidth || canvas.width;
    if (canvas.width !== width) canvas.width = width;
    const g = canvas.getContext("2d");
    const h = canvas.height;
    g.clearRect(0, 0, width, h);
    const series = [[fpsSeries, "#5fd35f", 60], [latencySeries, "#f0a040", 100]];
    for (const [data, colour, floor] of series) {
      let top = floor;
      for (let i = 0; i < chartCount; i++) if (data[i] > top) top = data[i];
      g.strokeStyle = colour;
      g.lineWidth = 1.5;
      g.beginPath();
      let drawing = false;
      for (let i = 0; i < chartCount; i++) {
        const v = data[(chartNext - chartCount + i + CHART_POINTS) % CHART_POINTS];
        const x = (width - 1) - ((chartCount - 1 - i) / (CHART_POINTS - 1)) * (width - 1); // newest on the right
        if (Number.isNaN(v)) { drawing = false; continue; }
        const y = h - 2 - (v / top) * (h - 14);
        if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
        drawing = true;
      }
      g.stroke();
    }
    g.fillStyle = "#aaa";
    g.font = "10px sans-serif";
    g.fillText("fps", 4, 10);
    g.fillStyle = "#f0a040";
    g.fillText("latency", 26, 10);
  }

  // ---- preview (MJPEG read with fetch, so the token header goes with it) ------------------------
  let previewWanted = true;
  let previewAbort = null;
  let previewUrl = null;
  let previewTimer = null;
  let previewFrames = 0;

  $("preview-toggle").addEventListener("click", () => {
    previewWanted = !previewWanted;
    pressed($("preview-toggle"), previewWanted);
    if (previewWanted) startPreview(); else stopPreview("preview off");
  });

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopPreview("paused while hidden");
    else if (previewWanted) startPreview();
  });

  function stopPreview(why = "preview off") {
    clearTimeout(previewTimer);
    if (previewAbort) { previewAbort.abort(); previewAbort = null; }
    $("preview-status").textContent = why;
    $("preview-status").hidden = false;
  }

  const CRLF2 = [13, 10, 13, 10];
  function indexOf(buf, pattern, from = 0) {
    outer: for (let i = from; i <= buf.length - pattern.length; i++) {
      for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
      return i;
    }
    return -1;
  }

  async function startPreview() {
    stopPreview("connecting…");
    if (document.hidden) return;
    const ctrl = new AbortController();
    previewAbort = ctrl;
    try {
      const r = await fetch("/preview.mjpg", { headers: headers(), signal: ctrl.signal, cache: "no-store" });
      if (!r.ok) throw new ApiError(await errorOf(r), r.status);
      const reader = r.body.getReader();
      let buf = new Uint8Array(0);
      $("preview-status").hidden = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf);
        joined.set(value, buf.length);
        buf = joined;
        for (;;) { // one part: --frame, headers, blank line, Content-Length bytes of JPEG
          const end = indexOf(buf, CRLF2);
          if (end < 0) break;
          const head = new TextDecoder().decode(buf.subarray(0, end));
          const m = /content-length:\s*(\d+)/i.exec(head);
          if (!m) { buf = buf.subarray(end + 4); continue; }
          const size = Number(m[1]);
          if (buf.length < end + 4 + size) break;
          showFrame(buf.slice(end + 4, end + 4 + size));
          buf = buf.subarray(end + 4 + size);
        }
        if (buf.length > 8 << 20) buf = new Uint8Array(0); // never: a part is a few tens of kB
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e.status === 401) { askToken(e.message); return; }
      $("preview-status").textContent = `preview: ${e.message}`;
    }
    if (ctrl.signal.aborted) return;
    $("preview-status").hidden = false;
    $("preview-status").textContent = "preview interrupted; retrying…";
    previewTimer = setTimeout(() => { if (previewWanted) startPreview(); }, 2000);
  }

  function showFrame(jpeg) {
    const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const old = previewUrl;
    previewUrl = url;
    const img = $("preview");
    img.src = url;
    previewFrames += 1;
    img.dataset.frames = String(previewFrames);
    if (old) URL.revokeObjectURL(old);
  }

  // ---- jobs -------------------------------------------------------------------------------------
  let jobsKey = "";
  let refreshTimer = null;

  function renderJobsForm() {
    const enabled = info && info.jobs.enabled;
    $("jobs-section").hidden = !enabled;
    const kinds = ((info && info.jobs.kinds) || []).filter((k) => k === "animate" || k === "swap");
    const select = $("job-kind");
    if ([...select.options].map((o) => o.value).join() !== kinds.join()) {
      select.replaceChildren(...kinds.map((k) => new Option(k, k)));
    }
  }

  function renderJobCharacters(s) {
    const select = $("job-character");
    const names = s.characters || [];
    if ([...select.options].map((o) => o.value).join("\n") === names.join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (names.includes(chosen)) select.value = chosen;
  }

  $("job-video-file").addEventListener("change", (e) => {
    if (e.target.files[0]) uploadJobVideo(e.target.files[0]);
    e.target.value = "";
  });

  async function uploadJobVideo(file) {
    const say = (t, err) => { $("job-message").textContent = t; $("job-message").classList.toggle("error", !!err); };
    say(`uploading ${file.name}…`);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await post("/job-inputs", undefined, { form });
      $("job-video").value = r.path;
      say(r.message);
    } catch (e) { say(`${file.name}: ${e.message}`, true); }
  }

  $("job-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const say = (t, err) => { $("job-message").textContent = t; $("job-message").classList.toggle("error", !!err); };
    const kind = $("job-kind").value;
    const video = $("job-video").value.trim();
    const name = $("job-character").value;
    let output = $("job-output").value.trim() || `facecast-${kind}-${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}.mp4`;
    if (!/[\\/]/.test(output) && info.jobs.output_dirs.length) output = `${info.jobs.output_dirs[0]}/${output}`;
    if (!name || !video) { say("pick a character and a video", true); return; }
    try {
      const character = await get(`/characters/${encodeURIComponent(name)}`);
      const params = kind === "animate" ? { character: character.file, driving: video } : { face: character.file, target: video };
      const job = await post("/jobs", { kind, output, params });
      say(`job ${job.id} queued: ${job.output}`);
      $("job-output").value = "";
      refreshJobs();
    } catch (err) { say(err.message, true); }
  });

  async function refreshJobs() {
    if (!info || !info.jobs.enabled) return;
    try {
      const body = await get(`/jobs?limit=${JOBS_SHOWN}`);
      renderJobs(body.jobs);
      if (body.jobs.some((j) => j.status === "queued" || j.status === "running")) {
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(refreshJobs, 5000); // the WebSocket moves the bars; this catches status changes
      }
    } catch { /* the socket says what is wrong */ }
  }

  function renderJobs(jobs) {
    $("jobs").replaceChildren(...jobs.map((j) => {
      const li = document.createElement("li");
      li.dataset.id = j.id;
      li.className = "job " + j.status;
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = j.status === "done" ? 1 : j.progress;
      bar.setAttribute("aria-label", `job ${j.id} progress`);
      const pct = text("span", `${Math.round(bar.value * 100)}%`, "pct");
      const title = text("span", `${j.kind} → ${j.output.split(/[\\/]/).pop()}`, "title");
      const status = text("span", j.status + (j.error ? `: ${j.error}` : ""), "status");
      li.append(title, bar, pct, status);
      const button = (label, handler) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", handler);
        li.append(b);
      };
      if (j.status === "queued" || j.status === "running") button("cancel", () => jobChange(j.id, "cancel"));
      if (j.status === "failed" || j.status === "cancelled") button("retry", () => jobChange(j.id, "retry"));
      if (j.status === "done") button("open", () => openResult(j));
      return li;
    }));
  }

  async function jobChange(id, what) {
    try { await post(`/jobs/${id}/${what}`); } catch (e) { note(`${what} ${id}: ${e.message}`, true); }
    refreshJobs();
  }

  function jobProgress(jobs) {
    const key = JSON.stringify([jobs.queue, jobs.current && jobs.current.id]);
    if (key !== jobsKey) { jobsKey = key; refreshJobs(); }
    if (!jobs.current) return;
    const li = $("jobs").querySelector(`li[data-id="${CSS.escape(jobs.current.id)}"]`);
    if (!li) return;
    li.querySelector("progress").value = jobs.current.progress;
    li.querySelector(".pct").textContent = `${Math.round(jobs.current.progress * 100)}%`;
  }

  let playerUrl = null;
  async function openResult(job) {
    try {
      const url = await blobUrl(`/jobs/${job.id}/result`);
      if (playerUrl) URL.revokeObjectURL(playerUrl);
      playerUrl = url;
      $("player-video").src = url;
      $("player-path").textContent = job.output;
      $("player").showModal();
    } catch (e) { note(`open ${job.id}: ${e.message}`, true); }
  }

  $("player").addEventListener("close", () => {
    $("player-video").pause();
    $("player-video").removeAttribute("src");
    $("player-video").load();
    if (playerUrl) { URL.revokeObjectURL(playerUrl); playerUrl = null; }
  });

  // ---- go ---------------------------------------------------------------------------------------
  if (LAYOUT === "dock") {
    for (const id of ["jobs-section", "hotkeys-section", "log-section"]) $(id).open = false;
  }
  start();
})();
