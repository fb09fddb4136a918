// The pgcache dashboard: reads /api/v1/metrics/stream (one event per second, the last minutes
// first) and draws it with uPlot. Nothing here is sent anywhere but this service.
"use strict";

(function () {
  const CACHES = ["features", "predictions", "fingerprints", "explain_plans", "anomalies"];
  const COLORS = ["#2f6fde", "#e07b00", "#1a9e55", "#b23aa8", "#c0262d", "#5b6b80",
    "#0b8ea0", "#8a6d00", "#6941c6", "#d1495b"];
  const MAX_POINTS = 600; // ten minutes at one event a second
  const number = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
  const whole = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });

  const $ = (selector, root = document) => root.querySelector(selector);
  const text = (value, format = number) =>
    value === null || value === undefined ? "-" : format.format(value);
  const percent = (value) => (value === null || value === undefined ? "-" : value.toFixed(1) + " %");

  // --- series kept by the page --------------------------------------------------------------

  const times = [];
  const series = new Map(); // name -> array of values aligned with times
  let lastId = null;
  let streamId = null;
  let latest = null;
  let events = 0;

  function push(name, value) {
    let values = series.get(name);
    if (!values) {
      values = new Array(times.length - 1).fill(null);
      series.set(name, values);
    }
    values.push(value === undefined ? null : value);
  }

  function trim() {
    const extra = times.length - MAX_POINTS;
    if (extra > 0) {
      times.splice(0, extra);
      for (const values of series.values()) values.splice(0, extra);
    }
    for (const values of series.values()) {
      while (values.length < times.length) values.push(null);
    }
  }

  function reset() {
    times.length = 0;
    series.clear();
  }

  function record(event) {
    times.push(event.at);
    const caches = event.caches;
    for (const name of CACHES) {
      const rates = caches[name] || {};
      const status = event.status.metrics[rates.metrics_key] || {};
      push("hit_rate:" + name, rates.hit_rate_now);
      push("lookups:" + name, rates.lookups_per_s);
      push("entries:" + name, status.size);
    }
    push("hit_rate:overall", event.overall.hit_rate_now);
    const sum = (key) => CACHES.reduce((total, name) => total + ((caches[name] || {})[key] || 0), 0);
    const started = event.interval !== null;
    push("evictions", started ? sum("evictions_per_s") : null);
    push("rejections", started ? sum("rejections_per_s") : null);
    for (const [endpoint, row] of Object.entries(event.requests || {})) {
      push("requests:" + endpoint, row.per_s);
      push("p99:" + endpoint, row.p99_ms);
    }
    const pool = event.pool;
    push("pool:in_use", pool && pool.in_use);
    push("pool:waiting", pool && pool.waiting);
    push("pool:errors", pool && started ? pool.timeouts_per_s + pool.connection_errors_per_s : null);
    const ml = event.ml;
    push("ml:calls", ml && ml.calls_per_s);
    push("ml:retries", ml && ml.retries_per_s);
    push("ml:failures", ml && ml.failures_per_s);
    const redis = event.redis;
    push("redis:errors", redis && redis.errors_per_s);
    push("redis:invalidations", redis && redis.invalidations_received_per_s);
    const limit = event.rate_limit;
    push("limit:allowed", limit && limit.allowed_per_s);
    push("limit:limited", limit && limit.limited_per_s);
    trim();
  }

  // --- charts ---------------------------------------------------------------------------------

  const charts = new Map(); // panel name -> {plot, keys, element}

  function chartSeries(panel) {
    const endpoints = Array.from(series.keys())
      .filter((key) => key.startsWith("requests:"))
      .map((key) => key.slice("requests:".length))
      .sort();
    switch (panel) {
      case "hit-rate":
        return [...CACHES, "overall"].map((name) => ["hit_rate:" + name, name]);
      case "lookups":
        return CACHES.map((name) => ["lookups:" + name, name]);
      case "entries":
        return CACHES.map((name) => ["entries:" + name, name]);
      case "evictions":
        return [["evictions", "evictions"], ["rejections", "rejections"]];
      case "requests":
        return endpoints.map((endpoint) => ["requests:" + endpoint, endpoint]);
      case "latency":
        return endpoints.map((endpoint) => ["p99:" + endpoint, endpoint]);
      case "pool":
        return [["pool:in_use", "in use"], ["pool:waiting", "waiting"], ["pool:errors", "errors/s"]];
      case "ml":
        return [["ml:calls", "calls/s"], ["ml:retries", "retries/s"], ["ml:failures", "failures/s"]];
      case "redis":
        return [["redis:errors", "errors/s"], ["redis:invalidations", "invalidations in/s"]];
      case "rate-limit":
        return [["limit:allowed", "allowed/s"], ["limit:limited", "limited/s"]];
      default:
        return [];
    }
  }

  function chartWidth(element) {
    return Math.max(200, Math.floor(element.getBoundingClientRect().width));
  }

  function makeChart(panel, element, keys) {
    const options = {
      width: chartWidth(element),
      height: 180,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: true }, y: panel === "hit-rate" ? { range: [0, 100] } : {} },
      axes: [{}, { size: 50 }],
      series: [
        {},
        ...keys.map(([, label], index) => ({
          label,
          stroke: COLORS[index % COLORS.length],
          width: panel === "hit-rate" && label === "overall" ? 2.5 : 1.5,
          spanGaps: false,
          points: { show: false },
        })),
      ],
    };
    const data = [times, ...keys.map(([key]) => series.get(key) || [])];
    return new uPlot(options, data, element);
  }

  function draw() {
    for (const section of document.querySelectorAll("[data-chart]")) {
      const panel = section.dataset.chart;
      const element = $(".chart", section);
      const keys = chartSeries(panel);
      const signature = keys.map(([key]) => key).join("|");
      let chart = charts.get(panel);
      if (chart && chart.signature !== signature) {
        chart.plot.destroy();
        chart = null;
      }
      if (!chart) {
        chart = { plot: makeChart(panel, element, keys), signature };
        charts.set(panel, chart);
      } else {
        chart.plot.setData([times, ...keys.map(([key]) => series.get(key) || [])]);
      }
      section.dataset.points = String(times.length);
    }
    document.body.dataset.drawn = String(events);
  }

  const resize = new ResizeObserver(() => {
    for (const [panel, chart] of charts) {
      const element = $(`[data-chart="${panel}"] .chart`);
      chart.plot.setSize({ width: chartWidth(element), height: 180 });
    }
  });
  for (const element of document.querySelectorAll(".chart")) resize.observe(element);

  // --- figures and tables ---------------------------------------------------------------------

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = value;
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  function figures(list, pairs) {
    list.replaceChildren(
      ...pairs.map(([label, value, state]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = label;
        dd.textContent = value;
        if (state) dd.className = "state-" + state;
        div.append(dt, dd);
        return div;
      }),
    );
  }

  function showCaches(event) {
    const tier = event.redis !== null;
    const bytes = CACHES.some((name) => (event.caches[name] || {}).bytes !== null);
    for (const th of document.querySelectorAll(".l2-column")) th.hidden = !tier;
    for (const th of document.querySelectorAll(".bytes-column")) th.hidden = !bytes;
    const body = $("#caches-table tbody");
    body.replaceChildren(
      ...CACHES.map((name, index) => {
        const rates = event.caches[name] || {};
        const status = event.status.metrics[rates.metrics_key] || {};
        const row = document.createElement("tr");
        row.dataset.cache = name;
        const label = cell(row, name);
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = COLORS[index];
        label.prepend(swatch);
        const figure = cell(row, status.hits + status.misses ? percent(status.hit_rate) : "unused");
        figure.id = "hit-rate-" + name;
        figure.dataset.value = String(status.hit_rate);
        cell(row, percent(rates.hit_rate_now));
        cell(row, text(rates.lookups_per_s));
        const limit = status.max_size === null ? "" : " / " + whole.format(status.max_size);
        cell(row, whole.format(status.size) + limit);
        if (bytes) cell(row, text(rates.bytes, whole));
        cell(row, text(rates.evictions_per_s));
        cell(row, text(rates.rejections_per_s));
        const l2 = status.l2;
        if (tier) cell(row, l2 && l2.hits + l2.misses ? percent(l2.hit_rate) : "unused");
        return row;
      }),
    );
  }

  function showRequests(event) {
    const note = $("#requests-note");
    const body = $("#requests-table tbody");
    if (event.requests === null) {
      note.textContent = "Not recorded: this application has no RequestMetricsMiddleware.";
      body.replaceChildren();
      return;
    }
    body.replaceChildren(
      ...Object.entries(event.requests).map(([endpoint, row]) => {
        const tr = document.createElement("tr");
        cell(tr, endpoint);
        cell(tr, text(row.per_s));
        cell(tr, text(row.p50_ms));
        cell(tr, text(row.p99_ms));
        cell(tr, text(row.server_errors_per_s));
        cell(tr, whole.format(row.requests));
        return tr;
      }),
    );
  }

  function showParts(event) {
    for (const [panel, part] of [["pool", event.pool], ["ml", event.ml], ["redis", event.redis],
      ["rate-limit", event.rate_limit]]) {
      $(`[data-chart="${panel}"]`).classList.toggle("off", part === null);
    }
    const pool = event.pool;
    figures($("#pool-figures"), pool === null ? [["database", "not configured", "off"]] : [
      ["in use", `${pool.in_use} / ${pool.max}`],
      ["idle", whole.format(pool.idle)],
      ["waiting", whole.format(pool.waiting), pool.waiting ? "warn" : null],
      ["timeouts", whole.format(pool.timeouts), pool.timeouts ? "bad" : null],
      ["connection errors", whole.format(pool.connection_errors),
        pool.connection_errors ? "bad" : null],
    ]);
    const ml = event.ml;
    const breaker = ml && ml.circuit_state;
    figures($("#ml-figures"), ml === null ? [["ML client", "none", "off"]] : [
      ["calls", whole.format(ml.calls)],
      ["retries", whole.format(ml.retries)],
      ["failures", whole.format(ml.failures), ml.failures ? "bad" : null],
      ["breaker", breaker || "none", breaker === "closed" ? "ok" : breaker ? "bad" : "off"],
    ]);
    const redis = event.redis;
    figures($("#redis-figures"), redis === null ? [["Redis", "off (REDIS_URL not set)", "off"]] : [
      ["state", redis.redis, redis.redis === "ok" ? "ok" : "bad"],
      ["breaker", redis.breaker, redis.breaker === "closed" ? "ok" : "bad"],
      ["subscribed", redis.subscribed ? "yes" : "no", redis.subscribed ? "ok" : "bad"],
      ["errors", whole.format(redis.errors), redis.errors ? "warn" : null],
      ["invalidations in", whole.format(redis.invalidations_received)],
      ["L1 flushes", whole.format(redis.l1_flushes), redis.l1_flushes ? "warn" : null],
    ]);
    const limit = event.rate_limit;
    figures($("#rate-limit-figures"), limit === null ? [["rate limit", "off (RATE_LIMIT not set)", "off"]] : [
      ["allowed", whole.format(limit.allowed)],
      ["limited", whole.format(limit.limited), limit.limited ? "warn" : null],
    ]);
  }

  function showHeadline(event) {
    const status = event.status;
    const overall = $("#hit-rate-overall");
    const lookups = status.metrics.total_cache_hits + status.metrics.total_cache_misses;
    overall.textContent = lookups ? percent(status.metrics.overall_hit_rate) : "no lookups yet";
    overall.dataset.value = String(status.metrics.overall_hit_rate);
    const caching = $("#caching");
    caching.textContent = status.enabled ? "on" : "off";
    caching.className = status.enabled ? "state-ok" : "state-warn";
    $("#lookups-overall").textContent = text(event.overall.lookups_per_s);
    $("#listeners").textContent = String(event.listeners);
    $("#updated").textContent = new Date(event.at * 1000).toLocaleTimeString("en-GB");
  }

  let drawPending = false;
  function render() {
    drawPending = false;
    if (latest === null) return;
    showHeadline(latest);
    showCaches(latest);
    showRequests(latest);
    showParts(latest);
    draw();
  }

  // --- the stream -----------------------------------------------------------------------------

  function connection(label, state) {
    const element = $("#connection");
    element.textContent = label;
    element.className = "state-" + state;
  }

  const source = new EventSource("api/v1/metrics/stream");
  source.onopen = () => connection("live", "ok");
  source.onerror = () =>
    connection(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting", "warn");
  source.onmessage = (message) => {
    if (message.lastEventId === lastId) return;
    const stream = message.lastEventId.slice(0, message.lastEventId.lastIndexOf("-"));
    if (streamId !== null && stream !== streamId) reset(); // the service restarted
    streamId = stream;
    lastId = message.lastEventId;
    latest = JSON.parse(message.data);
    events += 1;
    document.body.dataset.events = String(events);
    record(latest);
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(render);
    }
  };
  window.addEventListener("pagehide", () => source.close());

  // --- operator controls ----------------------------------------------------------------------

  const tokenInput = $("#admin-token");
  const result = $("#operator-result");
  const buttons = () => document.querySelectorAll("#operator-panel button");

  function updateMode() {
    const token = tokenInput.value.trim();
    for (const button of buttons()) button.disabled = token === "";
    $("#operator-mode").textContent = token
      ? "Operator mode: actions are sent with this token (Authorization: Bearer)."
      : "Read-only. Type the service's ADMIN_TOKEN to invalidate a query or empty a cache; " +
        "it stays in this page only.";
  }
  tokenInput.addEventListener("input", updateMode);
  $("#token-form").addEventListener("submit", (submit) => submit.preventDefault());

  async function operate(method, path, body) {
    result.textContent = `${method} ${path} ...`;
    try {
      const response = await fetch(path, {
        method,
        headers: {
          Authorization: "Bearer " + tokenInput.value.trim(),
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body,
        cache: "no-store",
      });
      const answer = await response.text();
      result.textContent = `${method} /${path} -> ${response.status} ${answer}`;
      result.className = "result " + (response.ok ? "state-ok" : "state-bad");
    } catch (error) {
      result.textContent = `${method} /${path} failed: ${error}`;
      result.className = "result state-bad";
    }
  }

  $("#invalidate-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const hash = $("#invalidate-hash").value.trim();
    if (!/^-?[0-9]{1,20}$/.test(hash)) {
      result.textContent = "a query hash is a signed 64-bit integer, e.g. -4275395387347183116";
      result.className = "result state-bad";
      return;
    }
    // Written as text: a 64-bit hash does not survive a JavaScript number.
    operate("POST", "api/v1/cache/invalidate", `{"query_hash": ${hash}}`);
  });

  $("#clear-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const name = $("#clear-cache").value;
    if (window.confirm(`Empty the ${name} cache on every instance?`)) {
      operate("DELETE", "api/v1/cache/" + encodeURIComponent(name));
    }
  });
  updateMode();
})();
