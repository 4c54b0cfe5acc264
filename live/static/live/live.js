/* Squirrel live pages: the REST API for rows, the WebSocket for values. No build step. */
"use strict";
const Squirrel = (() => {
  const SEVERITY = ["NO_ALARM", "MINOR", "MAJOR", "INVALID"];

  async function api(path, options = {}) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      ...options,
    });
    const body = await response.json();
    if (!response.ok || (body && body.errorCode)) {
      throw new Error((body && (body.errorMessage || body.detail)) || `HTTP ${response.status}`);
    }
    return body && "payload" in body ? body.payload : body;
  }

  function format(value, precision) {
    if (value === null || value === undefined) return "—";
    if (Array.isArray(value)) return `[${value.length}] ${value.slice(0, 3).map((v) => format(v, precision)).join(", ")}…`;
    if (typeof value === "number" && precision !== undefined && precision !== null && !Number.isInteger(value)) {
      return value.toFixed(Math.max(0, Math.min(precision, 12)));
    }
    return String(value);
  }

  /** A value as shown: an enum by its label (the wire's value is its index), else formatted. */
  function shown(v) {
    if (!v) return "—";
    return v.label !== undefined && v.label !== null ? String(v.label) : format(v.value, v.precision);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
    return `${Math.floor(seconds / 3600)} h`;
  }

  /** One socket, re-subscribing after reconnects; calls onValue(name, entry) per update. */
  function liveSocket(onValue, onHeartbeat) {
    let socket = null;
    let wanted = new Set();
    let attempt = 0;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws/pvs`;
    const send = (message) => socket && socket.readyState === 1 && socket.send(JSON.stringify(message));
    function open() {
      socket = new WebSocket(url);
      socket.onopen = () => {
        attempt = 0;
        if (wanted.size) send({ type: "subscribe", pvNames: [...wanted] });
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "initial" || message.type === "diff") {
          for (const [name, entry] of Object.entries(message.data)) onValue(name, entry);
        } else if (message.type === "heartbeat") {
          onHeartbeat(message.monitor_alive, message.monitor_heartbeat);
        }
      };
      socket.onclose = () => {
        attempt += 1;
        setTimeout(open, Math.min(30000, 500 * 2 ** attempt));
      };
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

  function banner(alive, text) {
    const el = document.getElementById("monitor-banner");
    el.className = `banner ${alive ? "alive" : "dead"}`;
    el.textContent = text;
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

  /** Cells registered per address; values land in every cell showing that address. */
  function cellRegistry() {
    const cells = new Map();
    const latest = new Map();
    function paint(name) {
      const entry = latest.get(name);
      for (const cell of cells.get(name) || []) {
        const row = cell.closest("tr");
        cell.textContent = shown(entry);
        cell.classList.remove("flash"); void cell.offsetWidth; cell.classList.add("flash");
        if (!entry) continue;
        row.classList.toggle("disconnected", entry.connected === false);
        if (cell.dataset.role === "sp" || !row.dataset.spAddr) {
          const sev = row.querySelector(".sev");
          if (sev) { sev.textContent = entry.connected === false ? "DISCONNECTED" : (SEVERITY[entry.severity] || "—"); sev.className = `sev sev-${entry.severity}`; }
          const units = row.querySelector(".units");
          if (units && entry.units) units.textContent = entry.units;
        }
      }
    }
    return {
      reset() { cells.clear(); },
      add(name, cell) { if (!name) return; if (!cells.has(name)) cells.set(name, []); cells.get(name).push(cell); paint(name); },
      names() { return [...cells.keys()]; },
      update(name, entry) { latest.set(name, entry); paint(name); },
      tick() {
        const now = Date.now() / 1000;
        for (const row of document.querySelectorAll("tr[data-live]")) {
          const entry = latest.get(row.dataset.spAddr) || latest.get(row.dataset.rbAddr);
          const cell = row.querySelector(".age");
          if (cell) cell.textContent = entry ? age(now - (entry.timestamp || entry.updated_at)) : "—";
        }
      },
    };
  }

  function td(text, className) {
    const cell = document.createElement("td");
    if (className) cell.className = className;
    cell.textContent = text ?? "";
    return cell;
  }

  function liveRow(registry, spAddr, rbAddr, before = [], after = []) {
    const row = document.createElement("tr");
    row.dataset.live = "1";
    row.dataset.spAddr = spAddr || "";
    row.dataset.rbAddr = rbAddr || "";
    const liveSp = td("—", "num live live-sp"); liveSp.dataset.role = "sp";
    const liveRb = td("—", "num live live-rb"); liveRb.dataset.role = "rb";
    row.append(...before, liveSp, ...after.slice(0, 1), liveRb, ...after.slice(1));
    registry.add(spAddr, liveSp);
    registry.add(rbAddr, liveRb);
    return row;
  }

  function pvBrowser() {
    const registry = cellRegistry();
    const socket = liveSocket((n, e) => registry.update(n, e), () => {});
    const tbody = document.querySelector("#pvs tbody");
    let token = null;
    watchMonitor();
    setInterval(() => registry.tick(), 1000);

    async function loadTags() {
      const select = document.getElementById("tag");
      for (const group of await api("/v1/tags")) {
        const [detail] = await api(`/v1/tags/${group.id}`);
        const optgroup = document.createElement("optgroup");
        optgroup.label = group.name;
        for (const tag of detail.tags) {
          const option = new Option(tag.name, JSON.stringify({ [group.id]: [tag.id] }));
          optgroup.append(option);
        }
        select.append(optgroup);
      }
    }

    async function load(fresh) {
      if (fresh) token = null;
      const params = new URLSearchParams({ pvName: document.getElementById("q").value, pageSize: document.getElementById("page-size").value });
      if (token) params.set("continuationToken", token);
      const tag = document.getElementById("tag").value;
      if (tag) params.set("tagFilters", tag);
      const page = await api(`/v1/pvs/paged?${params}`);
      token = page.continuationToken;
      document.getElementById("count").textContent = `${page.totalCount} PVs`;
      document.getElementById("next").disabled = !token;
      registry.reset();
      tbody.replaceChildren(...page.results.map((pv) => {
        const sp = pv.setpointAddress, rb = pv.readbackAddress;
        return liveRow(registry, sp, rb, [td(sp || "—")], [td(rb || "—"), td("", "units"), td("—", "sev"), td("—", "age num"), td(pv.description || "")]);
      }));
      socket.set(registry.names());
    }

    let debounce;
    document.getElementById("q").addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => load(true), 250); });
    document.getElementById("tag").addEventListener("change", () => load(true));
    document.getElementById("page-size").addEventListener("change", () => load(true));
    document.getElementById("first").addEventListener("click", () => load(true));
    document.getElementById("next").addEventListener("click", () => load(false));
    document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); load(true); });
    loadTags().catch((e) => console.error(e));
    load(true).catch((e) => { document.getElementById("count").textContent = `error: ${e.message}`; });
  }

  function snapshotLive(snapshotId) {
    const registry = cellRegistry();
    const socket = liveSocket((n, e) => registry.update(n, e), () => {});
    const tbody = document.querySelector("#values tbody");
    const rowsByPv = new Map();
    watchMonitor();
    setInterval(() => registry.tick(), 1000);

    async function loadValues() {
      const snapshot = await api(`/v1/snapshots/${snapshotId}?limit=2000&offset=0`);
      document.getElementById("title").textContent = `${snapshot.title} — saved vs live`;
      registry.reset();
      tbody.replaceChildren(...snapshot.pvValues.map((v) => {
        const sp = v.setpointValue, rb = v.readbackValue;
        const row = liveRow(registry, v.setpointName, v.readbackName,
          [td(v.pvName), td(shown(sp), "num")],
          [td(shown(rb), "num"), td("—", "sev"), td("—", "age num")]);
        rowsByPv.set(v.pvId, row);
        return row;
      }));
      socket.set(registry.names());
      return snapshot.pvCount;
    }

    /* The tolerance rule lives on the server (compare/live); the page only shows its verdict. */
    async function refreshCompare(total) {
      try {
        const result = await api(`/v1/snapshots/${snapshotId}/compare/live`);
        const different = new Set(result.differences.map((d) => d.pvId));
        for (const [pvId, row] of rowsByPv) row.classList.toggle("out-of-tolerance", different.has(pvId));
        document.getElementById("summary").textContent =
          `${result.differenceCount} of ${total} PVs out of tolerance, ${result.matchCount} within` +
          (total > rowsByPv.size ? ` (showing the first ${rowsByPv.size})` : "");
        applyFilter();
      } catch (error) {
        document.getElementById("summary").textContent = `comparison unavailable: ${error.message}`;
      }
    }

    function applyFilter() {
      const only = document.getElementById("only-diff").checked;
      for (const row of rowsByPv.values()) row.hidden = only && !row.classList.contains("out-of-tolerance");
    }
    document.getElementById("only-diff").addEventListener("change", applyFilter);
    loadValues().then((total) => { refreshCompare(total); setInterval(() => refreshCompare(total), 2000); })
      .catch((e) => { document.getElementById("summary").textContent = `error: ${e.message}`; });
  }

  return { api, pvBrowser, snapshotLive };
})();
