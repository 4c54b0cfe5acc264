/* Squirrel live pages. No build step.

   Both pages page, search and filter on the server and draw only the rows of one page. Values
   change by writing the text of text nodes that already exist, batched per animation frame:
   nothing reads layout (no element size or position is ever asked for), so an update never forces
   the browser to lay out the table.

   PV browser: GET /v1/pvs/search (natural address order) for the rows, the WebSocket for
   their live values.
   Snapshot vs live: GET /v1/snapshots/{id}/live-rows every 2 s with If-None-Match; the
   server sends saved and live values already shown alike, with each row's verdict, from one
   comparison per snapshot shared by every open page. */
"use strict";
const Squirrel = (() => {
  const SEVERITY = ["NO_ALARM", "MINOR", "MAJOR", "INVALID"];
  const POLL_MS = 2000; // a put shows within ~2.2 s; each open page costs one request per 2 s
  const COMPARING_POLL_MS = 200;

  async function api(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok || (body && body.errorCode)) {
      throw new Error((body && (body.errorMessage || body.detail)) || `HTTP ${response.status}`);
    }
    return body && "payload" in body ? body.payload : body;
  }

  /** Work for the next animation frame, run once however often it is asked for. */
  function frameScheduler(work) {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; work(); });
    };
  }

  /** A table cell holding one text node; ``set`` writes the node only when the text differs.
   * A name cell ("name" class) carries its whole text as a tooltip: a long address is cut. */
  function cell(className, text = "") {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (className === "name" && text) td.title = text;
    const node = document.createTextNode(text);
    td.append(node);
    return { td, set(value) { const next = value ?? ""; if (node.data !== next) node.data = next; } };
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 0) seconds = 0;
    if (seconds < 60) return `${seconds.toFixed(0)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
    return `${Math.floor(seconds / 3600)} h`;
  }

  function banner(alive, text) {
    const el = document.getElementById("monitor-banner");
    const className = `banner ${alive ? "alive" : "dead"}`;
    if (el.className !== className) el.className = className;
    if (el.textContent !== text) el.textContent = text;
  }

  function watchMonitor() {
    async function poll() {
      try {
        const beat = await api("/v1/health/heartbeat");
        banner(beat.alive, beat.alive ? `monitor live (${age(beat.age_seconds)})`
          : `LIVE DATA DISCONNECTED${beat.age_seconds != null ? ` for ${age(beat.age_seconds)}` : ""}`);
      } catch (error) {
        banner(false, `monitor status unknown: ${error.message}`);
      }
    }
    poll();
    setInterval(poll, 5000);
  }

  async function loadTags(select) {
    for (const group of await api("/v1/tags")) {
      const [detail] = await api(`/v1/tags/${group.id}`);
      const optgroup = document.createElement("optgroup");
      optgroup.label = group.name;
      for (const tag of detail.tags) optgroup.append(new Option(tag.name, tag.id));
      select.append(optgroup);
    }
  }

  function debounced(fn, ms) {
    let timer;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  // --- PV browser ----------------------------------------------------------------------------

  /** A live value as the PV browser shows it: an enum by its label, arrays summarised. */
  function formatValue(value, precision) {
    if (value === null || value === undefined) return "—";
    if (Array.isArray(value)) {
      const head = value.slice(0, 3).map((v) => formatValue(v, precision)).join(", ");
      return `[${value.length}] ${head}${value.length > 3 ? "…" : ""}`;
    }
    if (typeof value === "number" && !Number.isInteger(value)) {
      if (precision !== undefined && precision !== null && precision >= 0 && precision <= 12) return value.toFixed(precision);
      return String(Number(value.toPrecision(10)));
    }
    return String(value);
  }

  function shownEntry(entry) {
    if (!entry) return "—";
    if (entry.connected === false) return "disconnected";
    return entry.label !== undefined && entry.label !== null ? String(entry.label) : formatValue(entry.value, entry.precision);
  }

  /** One socket, re-subscribing after reconnects; calls onValues({name: entry}) per message. */
  function liveSocket(onValues) {
    let socket = null;
    let wanted = new Set();
    let attempt = 0;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws/pvs`;
    const send = (message) => socket && socket.readyState === 1 && socket.send(JSON.stringify(message));
    function open() {
      socket = new WebSocket(url);
      socket.onopen = () => { attempt = 0; if (wanted.size) send({ type: "subscribe", pvNames: [...wanted] }); };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "initial" || message.type === "diff") onValues(message.data);
      };
      socket.onclose = () => { attempt += 1; setTimeout(open, Math.min(30000, 500 * 2 ** attempt)); };
    }
    open();
    return {
      set(names) {
        const next = new Set(names.filter(Boolean));
        const gone = [...wanted].filter((n) => !next.has(n));
        const added = [...next].filter((n) => !wanted.has(n));
        wanted = next;
        if (gone.length) send({ type: "unsubscribe", pvNames: gone });
        if (added.length) send({ type: "subscribe", pvNames: added });
      },
    };
  }

  function pvBrowser() {
    const tbody = document.querySelector("#pvs tbody");
    const form = { q: document.getElementById("q"), tag: document.getElementById("tag"), size: document.getElementById("page-size") };
    const latest = new Map(); // address -> entry
    const pending = new Set(); // addresses whose cells wait for the next frame
    let rows = []; // {tr, sp, rb, liveSp, liveRb, units, sev, age}
    let byAddress = new Map(); // address -> [{row, role}]
    let offset = 0;
    let total = 0;
    let request = 0;

    function paintRow(row) {
      const sp = row.sp ? latest.get(row.sp) : undefined;
      const rb = row.rb ? latest.get(row.rb) : undefined;
      if (row.sp) row.liveSp.set(shownEntry(sp));
      row.liveRb.set(row.rb ? shownEntry(rb) : "");
      const main = sp || rb;
      const down = [sp, rb].some((e) => e && e.connected === false);
      row.tr.classList.toggle("disconnected", down);
      row.sev.set(down ? "DISCONNECTED" : main ? (SEVERITY[main.severity] || "—") : "—");
      const sevClass = `sev sev-${down ? "down" : main ? main.severity : ""}`;
      if (row.sev.td.className !== sevClass) row.sev.td.className = sevClass;
      if (main && main.units) row.units.set(main.units);
    }

    const paint = frameScheduler(() => {
      for (const address of pending) for (const row of byAddress.get(address) || []) paintRow(row);
      pending.clear();
    });

    const socket = liveSocket((data) => {
      for (const [name, entry] of Object.entries(data)) {
        latest.set(name, entry);
        if (byAddress.has(name)) pending.add(name);
      }
      paint();
    });

    const tickAges = frameScheduler(() => {
      const now = Date.now() / 1000;
      for (const row of rows) {
        const entry = (row.sp && latest.get(row.sp)) || (row.rb && latest.get(row.rb));
        row.age.set(entry ? age(now - (entry.timestamp || entry.updated_at)) : "—");
      }
    });
    setInterval(tickAges, 1000);

    function build(results) {
      byAddress = new Map();
      rows = results.map((pv) => {
        const tr = document.createElement("tr");
        const sp = pv.readOnly && pv.setpointAddress === pv.readbackAddress ? null : pv.setpointAddress;
        const rb = pv.readbackAddress;
        tr.dataset.spAddr = sp || "";
        tr.dataset.rbAddr = rb || "";
        const row = {
          tr, sp, rb,
          liveSp: cell("num live live-sp", sp ? "—" : ""), liveRb: cell("num live live-rb", rb ? "—" : ""),
          units: cell("units"), sev: cell("sev", "—"), age: cell("age num", "—"),
        };
        tr.append(cell("name", sp || "—").td, row.liveSp.td, cell("name", rb || "—").td, row.liveRb.td,
          row.units.td, row.sev.td, row.age.td, cell("", pv.description || "").td);
        for (const address of [sp, rb]) {
          if (!address) continue;
          if (!byAddress.has(address)) byAddress.set(address, []);
          byAddress.get(address).push(row);
        }
        paintRow(row);
        return row;
      });
      tbody.replaceChildren(...rows.map((r) => r.tr));
      socket.set([...byAddress.keys()]);
    }

    async function load() {
      const mine = ++request;
      const size = Number(form.size.value);
      const params = new URLSearchParams({ q: form.q.value.trim(), limit: size, offset });
      if (form.tag.value) params.append("tags", form.tag.value);
      try {
        const page = await api(`/v1/pvs/search?${params}`);
        if (mine !== request) return;
        total = page.totalCount;
        requestAnimationFrame(() => {
          build(page.results);
          const last = Math.min(offset + page.results.length, total);
          document.getElementById("count").textContent = total ? `${offset + 1}–${last} of ${total} PVs` : "no PVs";
          document.getElementById("prev").disabled = offset === 0;
          document.getElementById("next").disabled = offset + size >= total;
        });
      } catch (error) {
        document.getElementById("count").textContent = `error: ${error.message}`;
      }
    }

    const restart = () => { offset = 0; load(); };
    form.q.addEventListener("input", debounced(restart, 250));
    form.tag.addEventListener("change", restart);
    form.size.addEventListener("change", restart);
    document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); restart(); });
    document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - Number(form.size.value)); load(); });
    document.getElementById("next").addEventListener("click", () => { offset += Number(form.size.value); load(); });
    watchMonitor();
    load().then(() => loadTags(form.tag)).catch((e) => console.error(e));
  }

  // --- Snapshot vs live ------------------------------------------------------------------------

  const VERDICT_TEXT = {
    "equal": "equal",
    "out-of-tolerance": "OUT OF TOLERANCE",
    "disconnected": "DISCONNECTED",
    "no-live-value": "no live value",
  };

  function snapshotLive(snapshotId) {
    const tbody = document.querySelector("#values tbody");
    const form = {
      q: document.getElementById("q"), onlyOut: document.getElementById("only-out"),
      tag: document.getElementById("tag"), size: document.getElementById("page-size"),
    };
    let rows = []; // {key, tr, cells..., timestamp}
    let offset = 0;
    let etag = null;
    let latest = null; // the last page answered, drawn at the next frame
    let timer = null;
    let request = 0;
    let tagsLoading = false;

    function params() {
      const p = new URLSearchParams({ offset, limit: form.size.value });
      const q = form.q.value.trim();
      if (q) p.set("q", q);
      if (form.onlyOut.checked) p.set("onlyOut", "true");
      if (form.tag.value) p.append("tags", form.tag.value);
      return p;
    }

    function newRow(data) {
      const tr = document.createElement("tr");
      const row = {
        key: data.pvName, tr, timestamp: null,
        name: cell("name", data.pvName),
        savedSp: cell("num saved saved-sp"), liveSp: cell("num live live-sp"),
        savedRb: cell("num saved saved-rb"), liveRb: cell("num live live-rb"),
        units: cell("units"), verdict: cell("verdict"), sev: cell("sev"), age: cell("age num"),
      };
      tr.dataset.pv = data.pvName;
      tr.append(row.name.td, row.savedSp.td, row.liveSp.td, row.savedRb.td, row.liveRb.td,
        row.units.td, row.verdict.td, row.sev.td, row.age.td);
      return row;
    }

    function liveText(value) {
      if (!value) return "—";
      if (value.connected === false) return "disconnected";
      return value.text ?? "—";
    }

    function update(row, data) {
      const className = `verdict-${data.verdict}`;
      if (row.tr.className !== className) row.tr.className = className;
      row.savedSp.set(data.savedSetpoint ? (data.savedSetpoint.text ?? "—") : "");
      row.liveSp.set(data.setpointAddress ? liveText(data.liveSetpoint) : "");
      row.savedRb.set(data.savedReadback ? (data.savedReadback.text ?? "—") : "");
      row.liveRb.set(data.readbackAddress ? liveText(data.liveReadback) : "");
      const main = data.liveSetpoint || data.liveReadback;
      const saved = data.savedSetpoint || data.savedReadback;
      row.units.set((main && main.units) || (saved && saved.units) || "");
      row.verdict.set(VERDICT_TEXT[data.verdict] || data.verdict);
      row.sev.set(main && main.connected !== false && main.severity !== null ? (SEVERITY[main.severity] || String(main.severity)) : "—");
      row.timestamp = main ? main.timestamp : null;
    }

    function summary(page) {
      const el = document.getElementById("summary");
      if (page.phase === "comparing") { el.textContent = "comparing with the live values…"; return; }
      const c = page.counts;
      const last = Math.min(page.offset + page.rows.length, page.matched);
      el.textContent = `${c.total} PVs: ${c.equal} equal, ${c.outOfTolerance} out of tolerance, ` +
        `${c.disconnected} disconnected, ${c.noLiveValue} without a live value` +
        ` · showing ${page.matched ? page.offset + 1 : 0}–${last} of ${page.matched}`;
      document.getElementById("prev").disabled = page.offset === 0;
      document.getElementById("next").disabled = page.offset + page.limit >= page.matched;
    }

    const draw = frameScheduler(() => {
      const page = latest;
      if (!page) return;
      latest = null;
      document.getElementById("title").textContent = `${page.title} — saved vs live`;
      banner(page.monitorAlive, page.monitorAlive ? "monitor live" : "LIVE DATA DISCONNECTED");
      const same = page.rows.length === rows.length && page.rows.every((r, i) => r.pvName === rows[i].key);
      if (!same) {
        rows = page.rows.map(newRow);
        page.rows.forEach((data, i) => update(rows[i], data));
        tbody.replaceChildren(...rows.map((r) => r.tr));
      } else {
        page.rows.forEach((data, i) => update(rows[i], data));
      }
      summary(page);
      tickAges();
    });

    function tickAges() {
      const now = Date.now() / 1000;
      for (const row of rows) row.age.set(row.timestamp ? age(now - row.timestamp) : "—");
    }
    setInterval(frameScheduler(tickAges), 1000);

    async function poll() {
      clearTimeout(timer);
      const mine = ++request;
      let wait = POLL_MS;
      try {
        const headers = { Accept: "application/json" };
        if (etag) headers["If-None-Match"] = etag;
        const response = await fetch(`/v1/snapshots/${snapshotId}/live-rows?${params()}`,
          { credentials: "same-origin", headers, cache: "no-store" });
        if (mine !== request) return;
        if (response.status !== 304) {
          const body = await response.json();
          if (!response.ok || body.errorCode) throw new Error(body.errorMessage || `HTTP ${response.status}`);
          if (mine !== request) return;
          etag = response.headers.get("ETag");
          latest = body.payload;
          if (!tagsLoading && latest.phase === "ready") {  // after the first screen, not before
            tagsLoading = true;
            loadTags(form.tag).catch((e) => console.error(e));
          }
          if (latest.phase === "comparing") { wait = COMPARING_POLL_MS; etag = null; }
          draw();
        }
      } catch (error) {
        document.getElementById("summary").textContent = `live comparison unavailable: ${error.message}`;
        wait = 3 * POLL_MS;
      }
      if (mine === request) timer = setTimeout(poll, wait);
    }

    const restart = () => { offset = 0; etag = null; poll(); };
    form.q.addEventListener("input", debounced(restart, 250));
    form.onlyOut.addEventListener("change", restart);
    form.tag.addEventListener("change", restart);
    form.size.addEventListener("change", restart);
    document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); restart(); });
    document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - Number(form.size.value)); etag = null; poll(); });
    document.getElementById("next").addEventListener("click", () => { offset += Number(form.size.value); etag = null; poll(); });
    poll();
  }

  return { api, pvBrowser, snapshotLive };
})();
