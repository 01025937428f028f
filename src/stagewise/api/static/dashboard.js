/*
 * stagewise dashboard: live updates, charts, and the action buttons.
 *
 * Why a file of its own: the Content-Security-Policy allows scripts from the
 * server's own files only (no inline script, no eval), so every behaviour of
 * the pages lives here. The pages are rendered by the server; this script
 *  - listens to the server-sent event stream and asks htmx to swap in fresh
 *    partials when something changed (coalesced, so a busy controller cannot
 *    flood the browser);
 *  - draws the charts with uPlot from the JSON that each partial embeds, and
 *    keeps the chart objects across swaps so they update instead of blinking;
 *  - asks for the API token once (kept in sessionStorage, i.e. for this tab),
 *    sends it as `Authorization: Bearer` on every POST or DELETE, and asks for
 *    confirmation before the destructive actions;
 *  - learns the token's name and role (`/api/v1/whoami`) and hides the buttons
 *    its role may not use (a viewer sees no Approve, an operator no Abort);
 *  - on a server whose reads need a token (`data-reads="token"`), also keeps
 *    the token in a same-site cookie, which the pages and the event stream
 *    (plain GETs a browser cannot add a header to) accept for reading only.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "stagewise.token";
  var ROLE_KEY = "stagewise.who"; // "name role" of the token, from /api/v1/whoami
  var COOKIE = "stagewise_token";
  var RANK = { viewer: 0, operator: 1, admin: 2 };
  var FLASH_KEY = "stagewise.flash"; // a toast for the next page, after an action that leaves this one
  var MIN_GAP_MS = 50; // at most one refresh per this many ms; htmx queues the rest into one
  var COLORS = { stable: "#3b6fd4", candidate: "#e8710a", extra: ["#1e9e6a", "#9c4dcc", "#c73e5a", "#6b7785"] };

  // ---- token ---------------------------------------------------------------------------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function setToken(value) {
    try {
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); } else { sessionStorage.removeItem(TOKEN_KEY); }
      if (!value) { sessionStorage.removeItem(ROLE_KEY); }
    } catch (e) { /* storage disabled: the token lives until the page reloads */ }
    if (document.body.getAttribute("data-reads") === "token") {
      document.cookie = COOKIE + "=" + (value ? encodeURIComponent(value) : "") + "; path=/; SameSite=Strict" +
        (value ? "" : "; max-age=0");
    }
    var forget = document.getElementById("forget-token");
    if (forget) { forget.hidden = !value; }
    if (!value) { applyRole(); }
  }

  // ---- who the token is: hide what its role may not do ---------------------------------------

  function who() {
    try { return (sessionStorage.getItem(ROLE_KEY) || "").split(" "); } catch (e) { return [""]; }
  }

  function applyRole() {
    var me = who();
    var role = me[1] || "";
    document.querySelectorAll("[data-action][data-role]").forEach(function (b) {
      b.hidden = role !== "" && RANK[role] < RANK[b.getAttribute("data-role")];
    });
    var label = document.getElementById("whoami");
    if (label) { label.textContent = role ? "token " + me[0] + " (" + role + ")" : ""; }
  }

  function learnRole() {
    if (!token() || !window.fetch) { return Promise.resolve(); }
    return fetch("/api/v1/whoami", { headers: { Authorization: "Bearer " + token() } }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (me) {
      if (me) {
        try { sessionStorage.setItem(ROLE_KEY, me.name + " " + me.role); } catch (e) { /* no storage */ }
      }
      applyRole();
    }).catch(function () { /* the server is away: the buttons stay as they are */ });
  }

  // ---- dialogs -------------------------------------------------------------------------

  function openDialog(dialog, onSubmit) {
    return new Promise(function (resolve) {
      var form = dialog.querySelector("form");
      function done(value) {
        form.removeEventListener("submit", submit);
        dialog.removeEventListener("close", closed);
        if (dialog.open) { dialog.close(); }
        resolve(value);
      }
      function submit(evt) { evt.preventDefault(); done(onSubmit()); }
      function closed() { done(null); }
      form.addEventListener("submit", submit);
      dialog.addEventListener("close", closed);
      dialog.querySelectorAll("[data-close]").forEach(function (b) { b.onclick = function () { done(null); }; });
      dialog.showModal();
    });
  }

  function askToken(error) {
    var dialog = document.getElementById("token-dialog");
    var input = document.getElementById("token-input");
    var message = document.getElementById("token-error");
    message.textContent = error || "";
    message.hidden = !error;
    input.value = "";
    var answer = openDialog(dialog, function () { return input.value.trim(); });
    input.focus();
    return answer.then(function (value) {
      if (value) { setToken(value); learnRole(); }
      return value;
    });
  }

  function confirmAction(question, label) {
    document.getElementById("confirm-text").textContent = question;
    document.getElementById("confirm-yes").textContent = label;
    return openDialog(document.getElementById("confirm-dialog"), function () { return true; });
  }

  function toast(text, kind) {
    var box = document.getElementById("toasts");
    if (!box) { return; }
    var el = document.createElement("div");
    el.className = "toast " + (kind || "");
    el.textContent = text;
    box.appendChild(el);
    setTimeout(function () { el.remove(); }, kind === "error" ? 9000 : 4000);
  }

  // ---- actions: confirmation, token, result ------------------------------------------------

  var retries = new WeakMap(); // button -> re-issues its request after a refused token

  document.addEventListener("htmx:confirm", function (evt) {
    var elt = evt.detail.elt;
    if (!elt.matches || !elt.matches("[data-action]")) { return; }
    evt.preventDefault();
    var question = elt.getAttribute("data-confirm");
    var asked = question ? confirmAction(question, elt.textContent.trim()) : Promise.resolve(true);
    asked.then(function (yes) {
      if (!yes) { return null; }
      return token() ? token() : askToken("");
    }).then(function (tok) {
      if (!tok) { return; }
      retries.set(elt, function () { evt.detail.issueRequest(true); });
      evt.detail.issueRequest(true);
    });
  });

  document.addEventListener("htmx:configRequest", function (evt) {
    if (evt.detail.verb !== "get") {
      evt.detail.headers["Authorization"] = "Bearer " + token();
    }
  });

  function detailOf(xhr) {
    try { return JSON.parse(xhr.responseText).detail || xhr.statusText; } catch (e) { return xhr.statusText; }
  }

  document.addEventListener("htmx:afterRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!elt.matches || !elt.matches("[data-action]")) { return; }
    var xhr = evt.detail.xhr;
    var label = elt.textContent.trim();
    if (xhr.status === 401) {
      setToken("");
      askToken("The server refused that token; nothing was changed. Enter it again.").then(function (tok) {
        var again = retries.get(elt);
        if (tok && again) { again(); }
      });
    } else if (xhr.status === 403) {
      toast(label + ": refused: " + detailOf(xhr), "error");
      learnRole(); // the token's role may not do this: hide what it may not use
    } else if (xhr.status >= 400 || xhr.status === 0) {
      toast(label + ": " + (xhr.status ? detailOf(xhr) : "the server did not answer"), "error");
    } else if (elt.hasAttribute("data-then")) {
      // The page is gone with what it showed (a deleted service): say so on the next one.
      try { sessionStorage.setItem(FLASH_KEY, label + ": done"); } catch (e) { /* no storage: no toast */ }
      window.location.assign(elt.getAttribute("data-then"));
    } else {
      toast(label + ": done", "ok");
      scheduleRefresh();
    }
  });

  function flash() {
    var text = null;
    try { text = sessionStorage.getItem(FLASH_KEY); sessionStorage.removeItem(FLASH_KEY); } catch (e) { return; }
    if (text) { toast(text, "ok"); }
  }

  // ---- overview filters -------------------------------------------------------------------

  // A phase chip sets the phase filter (the form then fetches the rows), so chip, select and URL agree.
  document.addEventListener("click", function (evt) {
    var chip = evt.target.closest ? evt.target.closest("a.chip[data-phase]") : null;
    var select = document.getElementById("phase");
    if (!chip || !select) { return; }
    evt.preventDefault();
    select.value = chip.getAttribute("data-phase");
    select.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // ---- live updates ----------------------------------------------------------------------

  var lastRefresh = 0;
  var pending = null;

  function scheduleRefresh() {
    var wait = lastRefresh + MIN_GAP_MS - Date.now();
    if (wait <= 0) { refreshNow(); } else if (!pending) { pending = setTimeout(refreshNow, wait); }
  }
  function refreshNow() {
    pending = null;
    lastRefresh = Date.now();
    htmx.trigger(document.body, "sw:change");
  }

  function setLive(state, text) {
    var el = document.getElementById("live-status");
    if (el) { el.setAttribute("data-state", state); el.textContent = text; }
  }

  function connect() {
    var url = document.body.getAttribute("data-stream");
    if (!url || !window.EventSource) { setLive("off", "no live updates"); return; }
    var source = new EventSource(url);
    var opened = false;
    source.addEventListener("hello", function () {
      setLive("on", "live");
      // Anything that changed while (re)connecting was not streamed: fetch once now.
      if (opened) { scheduleRefresh(); }
      opened = true;
    });
    source.addEventListener("change", scheduleRefresh);
    source.onerror = function () { setLive("off", "reconnecting…"); };
  }

  // ---- charts ----------------------------------------------------------------------------

  var charts = {}; // element id -> {plot, signature}

  function releaseColor(name, releases, index) {
    if (name === releases.stable) { return COLORS.stable; }
    if (name === releases.candidate) { return COLORS.candidate; }
    return COLORS.extra[index % COLORS.extra.length];
  }

  // Whole seconds at least: deliveries are watched over seconds to hours, never milliseconds.
  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
  function clockLabels(u, values) {
    return values.map(function (v) {
      return new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    });
  }

  function baseOptions(el, series, yAxis, scaleY) {
    return {
      width: Math.max(240, el.clientWidth || 300),
      height: 200,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: true }, y: scaleY || {} },
      axes: [
        { stroke: "#56606b", grid: { stroke: "#eef0f3" }, space: 80, incrs: TIME_STEPS, values: clockLabels },
        Object.assign({ stroke: "#56606b", grid: { stroke: "#eef0f3" }, size: 64 }, yAxis || {}),
      ],
      series: [{ label: "time", value: function (u, v) { return v == null ? "–" : new Date(v * 1000).toLocaleTimeString(); } }]
        .concat(series),
    };
  }

  function draw(el, signature, makeOptions, data) {
    var id = el.id;
    var known = charts[id];
    if (known && known.signature === signature) {
      if (known.plot.root.parentNode !== el) { el.appendChild(known.plot.root); }
      known.plot.setData(data);
      return;
    }
    if (known) { known.plot.destroy(); }
    el.textContent = "";
    charts[id] = { plot: new uPlot(makeOptions(), data, el), signature: signature };
  }

  function pct(u, v) { return v == null ? "–" : v.toFixed(v < 10 ? 2 : 1) + "%"; }
  function ms(u, v) { return v == null ? "–" : v.toFixed(v < 10 ? 2 : 0) + " ms"; }

  function drawTraffic(el, traffic) {
    if (!traffic || !traffic.t.length) { el.textContent = "no traffic has moved yet"; return; }
    var releases = { stable: traffic.releases[0], candidate: traffic.releases[1] };
    var names = traffic.releases;
    var data = [traffic.t].concat(names.map(function (r) { return traffic.series[r]; }));
    draw(el, "traffic:" + names.join(","), function () {
      return baseOptions(el, names.map(function (r, i) {
        return { label: r, stroke: releaseColor(r, releases, i), width: 2.5,
                 paths: uPlot.paths.stepped({ align: 1 }), points: { show: false },
                 value: function (u, v) { return v == null ? "–" : v + "%"; } };
      }), { values: function (u, vs) { return vs.map(function (v) { return v + "%"; }); } },
      { range: [0, 100] });
    }, data);
  }

  function drawErrors(el, run) {
    var rel = run.releases;
    var data = [run.t, run.error_rate.baseline, run.error_rate.candidate];
    draw(el, "errors:" + rel.baseline + "," + rel.candidate, function () {
      return baseOptions(el, [
        { label: rel.baseline, stroke: COLORS.stable, width: 2, value: pct, spanGaps: true },
        { label: rel.candidate, stroke: COLORS.candidate, width: 2, value: pct, spanGaps: true },
      ], { values: function (u, vs) { return vs.map(function (v) { return v + "%"; }); } },
      { range: function (u, min, max) { return [0, Math.max(1, max * 1.2)]; } });
    }, data);
  }

  var E_FLOOR = 1e-3; // e-values are drawn from here up: a log axis has no place for 0

  function drawEvidence(el, run) {
    if (!run.bounds) { el.textContent = "this judge reports no e-value"; return; }
    var metrics = Object.keys(run.bounds).sort();
    var palette = ["#c73e5a", "#9c4dcc", "#1e9e6a"];
    var data = [run.t];
    var series = [];
    metrics.forEach(function (m, i) {
      data.push(run.e_value[m].map(function (v) { return v == null ? null : Math.max(E_FLOOR, v); }));
      series.push({ label: m, stroke: palette[i % palette.length], width: 2, spanGaps: true,
                    value: function (u, v) { return v == null ? "–" : v.toPrecision(3); } });
    });
    var bounds = metrics.map(function (m) { return run.bounds[m]; })
      .filter(function (b, i, all) { return all.indexOf(b) === i; });
    bounds.forEach(function (b) {
      data.push(run.t.map(function () { return b; }));
      series.push({ label: "fails at " + b, stroke: "#444", width: 1, dash: [6, 4], points: { show: false },
                    value: function (u, v) { return v == null ? "–" : String(v); } });
    });
    draw(el, "evidence:" + metrics.join(","), function () {
      return baseOptions(el, series, {}, { distr: 3, range: function (u, min, max) {
        return wholeDecades(Math.min(0.1, min), Math.max(max * 2, 100));
      } });
    }, data);
  }

  // A log scale must start and end on powers of ten: uPlot's log ticks step from the scale's
  // minimum, and from a minimum between decades (an e-value of 0.0999, say) they never reach
  // the maximum — the page hangs and throws "Invalid array length".
  var MAX_DECADE = 300;
  function wholeDecades(low, high) {
    var from = Math.floor(Math.log10(low > 0 ? low : E_FLOOR));
    var to = high > 0 && isFinite(high) ? Math.ceil(Math.log10(high)) : MAX_DECADE;
    from = Math.max(-MAX_DECADE, Math.min(from, MAX_DECADE - 1));
    to = Math.max(from + 1, Math.min(to, MAX_DECADE));
    return [Math.pow(10, from), Math.pow(10, to)];
  }

  function drawLatency(el, run) {
    var rel = run.releases;
    var data = [run.t, run.p50.baseline, run.p99.baseline, run.p50.candidate, run.p99.candidate];
    draw(el, "latency:" + rel.baseline + "," + rel.candidate, function () {
      return baseOptions(el, [
        { label: rel.baseline + " p50", stroke: COLORS.stable, width: 2, value: ms, spanGaps: true },
        { label: rel.baseline + " p99", stroke: COLORS.stable, width: 1.5, dash: [5, 4], value: ms, spanGaps: true },
        { label: rel.candidate + " p50", stroke: COLORS.candidate, width: 2, value: ms, spanGaps: true },
        { label: rel.candidate + " p99", stroke: COLORS.candidate, width: 1.5, dash: [5, 4], value: ms, spanGaps: true },
      ], { values: function (u, vs) { return vs.map(function (v) { return v + " ms"; }); } },
      { range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; } });
    }, data);
  }

  function renderCharts(data) {
    var all = data.charts || {};
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var kind = el.getAttribute("data-chart");
      var run = (all.runs || {})[el.getAttribute("data-run")];
      if (kind === "traffic") { drawTraffic(el, all.traffic); }
      else if (run && !run.t.length) { el.textContent = "waiting for the first measurements"; }
      else if (run && kind === "errors") { drawErrors(el, run); }
      else if (run && kind === "evidence") { drawEvidence(el, run); }
      else if (run && kind === "latency") { drawLatency(el, run); }
    });
  }

  function updateActions(actions) {
    (actions || []).forEach(function (a) {
      var button = document.querySelector('[data-action="' + a.name + '"]');
      if (!button) { return; }
      button.disabled = !a.allowed;
      if (a.allowed) { button.removeAttribute("title"); } else { button.title = a.why_not; }
      if (a.confirm) { button.setAttribute("data-confirm", a.confirm); }
    });
  }

  function pageData() {
    var el = document.getElementById("page-data");
    if (!el) { return; }
    var data = JSON.parse(el.getAttribute("data-json"));
    updateActions(data.actions);
    renderCharts(data);
  }

  document.addEventListener("htmx:afterSettle", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "live") { pageData(); }
  });

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (id) {
        var c = charts[id];
        var parent = c.plot.root.parentNode;
        if (parent) { c.plot.setSize({ width: Math.max(240, parent.clientWidth), height: 200 }); }
      });
    }, 150);
  });

  document.addEventListener("DOMContentLoaded", function () {
    setToken(token());
    applyRole();
    learnRole();
    var forget = document.getElementById("forget-token");
    if (forget) {
      forget.addEventListener("click", function () { setToken(""); toast("Token forgotten for this tab.", "ok"); });
    }
    var ask = document.getElementById("token-ask"); // the page a server that needs a token for reads shows
    if (ask) {
      ask.addEventListener("click", function () {
        askToken("").then(function (tok) { if (tok) { window.location.reload(); } });
      });
    }
    pageData();
    connect();
    flash();
  });

  // For tests and curious people: how many live refreshes this page has applied.
  document.addEventListener("htmx:afterSettle", function () {
    document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
  });
})();
