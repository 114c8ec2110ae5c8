// Trace view interaction: collapse/expand subtrees, span details on click, highlight filter.
// Everything taken from span data is inserted with textContent, never as markup.
//
// The page loads this script before the waterfall, so a large trace can be clicked while its rows are
// still being parsed: listeners sit on the document, and rows and the details panel are looked up when
// they are needed.
//
// A large trace has only its first rows in the HTML; the others are in the JSON of #more-rows (built by
// waterfall::rows_json on the server). They are drawn after the first frame after load, in slices of
// a few milliseconds, so the page stays responsive, and each slice gets the current collapse, selection and
// filter state. performance.mark("waterfall-drawn") records when the last row is in.
(function () {
  "use strict";
  var toolbar = document.getElementById("trace-toolbar");
  if (!toolbar) return;
  var traceId = toolbar.dataset.traceId;
  function allRows() { return Array.prototype.slice.call(document.querySelectorAll("#waterfall .r")); }
  function panel() { return document.getElementById("details"); }
  var spans = null; // span id -> native API entry, once loaded
  var traceStart = null;
  var searchText = {}; // span id -> lowercase text the filter matches
  var selectedId = null; // span whose details are shown
  var allCollapsed = false; // "Collapse all" was the last bulk action: rows drawn later come collapsed

  var KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];
  var STATUS = ["unset", "ok", "error"];

  function refresh() {
    var rows = allRows();
    var hideBelow = Infinity;
    for (var i = 0; i < rows.length; i++) {
      var d = Number(rows[i].dataset.d);
      if (d <= hideBelow) hideBelow = Infinity;
      rows[i].hidden = d > hideBelow;
      if (hideBelow === Infinity && rows[i].classList.contains("collapsed")) hideBelow = d;
    }
  }

  function setCollapsed(row, collapsed) {
    row.classList.toggle("collapsed", collapsed);
    var toggle = row.querySelector("button.t");
    if (toggle) {
      toggle.textContent = collapsed ? "▸" : "▾";
      toggle.setAttribute("aria-label", collapsed ? "expand" : "collapse");
    }
  }

  function valueText(v) {
    if (!v) return "";
    if ("stringValue" in v) return v.stringValue;
    if ("intValue" in v) return String(v.intValue);
    if ("doubleValue" in v) return String(v.doubleValue);
    if ("boolValue" in v) return String(v.boolValue);
    if ("bytesValue" in v) return "bytes (base64) " + v.bytesValue;
    return JSON.stringify(v);
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function kvTable(title, list) {
    var section = el("section");
    section.appendChild(el("h3", title));
    if (!list || list.length === 0) {
      section.appendChild(el("p", "none", "hint"));
      return section;
    }
    var table = el("table", null, "kv");
    list.forEach(function (kv) {
      var tr = el("tr");
      tr.appendChild(el("th", kv.key));
      tr.appendChild(el("td", valueText(kv.value)));
      table.appendChild(tr);
    });
    section.appendChild(table);
    return section;
  }

  function offset(nanos) {
    if (nanos === undefined || traceStart === null) return "";
    var ns = Number(BigInt(nanos) - traceStart);
    return "+" + (ns / 1e6).toFixed(3) + " ms";
  }

  function show(id) {
    var details = panel();
    if (!details) return;
    selectedId = id;
    allRows().forEach(function (r) { r.classList.toggle("selected", r.dataset.id === id); });
    details.textContent = "";
    if (!spans) {
      details.appendChild(el("p", "Loading span details…", "hint"));
      return;
    }
    var entry = spans[id];
    if (!entry) {
      details.appendChild(el("p", "This span is not in the stored trace any more.", "error"));
      return;
    }
    var s = entry.span;
    details.appendChild(el("h2", s.name, "span-name"));
    var facts = el("table", null, "kv facts");
    var service = (entry.resource.attributes || []).filter(function (kv) { return kv.key === "service.name"; })[0];
    var status = s.status || {};
    [
      ["service", service ? valueText(service.value) : ""],
      ["kind", KINDS[s.kind || 0] || String(s.kind)],
      ["span id", s.spanId],
      ["parent span id", s.parentSpanId || "(root)"],
      ["start", offset(s.startTimeUnixNano)],
      ["duration", (Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano)) / 1e6).toFixed(3) + " ms"],
      ["status", (STATUS[status.code || 0] || String(status.code)) + (status.message ? ": " + status.message : "")],
      ["trace state", s.traceState || ""],
      ["flags", String(s.flags || 0)]
    ].forEach(function (pair) {
      var tr = el("tr");
      tr.appendChild(el("th", pair[0]));
      tr.appendChild(el("td", pair[1]));
      facts.appendChild(tr);
    });
    details.appendChild(facts);
    details.appendChild(kvTable("Attributes", s.attributes));
    var events = el("section");
    events.appendChild(el("h3", "Events"));
    (s.events || []).forEach(function (e) {
      events.appendChild(el("h4", offset(e.timeUnixNano) + " " + e.name));
      events.appendChild(kvTable("attributes", e.attributes));
    });
    if (!s.events || s.events.length === 0) events.appendChild(el("p", "none", "hint"));
    details.appendChild(events);
    var links = el("section");
    links.appendChild(el("h3", "Links"));
    (s.links || []).forEach(function (l) {
      var p = el("p");
      var a = el("a", l.traceId + " / " + l.spanId);
      a.href = "/trace/" + encodeURIComponent(l.traceId);
      p.appendChild(a);
      links.appendChild(p);
      links.appendChild(kvTable("attributes", l.attributes));
    });
    if (!s.links || s.links.length === 0) links.appendChild(el("p", "none", "hint"));
    details.appendChild(links);
    details.appendChild(kvTable("Resource", entry.resource.attributes));
    var scope = entry.scope || {};
    details.appendChild(kvTable("Scope " + (scope.name || "") + " " + (scope.version || ""), scope.attributes));
  }

  function applyFilter() {
    var query = document.getElementById("filter").value.trim().toLowerCase();
    var hits = 0;
    allRows().forEach(function (r) {
      var text = searchText[r.dataset.id] || r.textContent.toLowerCase();
      var hit = query !== "" && text.indexOf(query) !== -1;
      r.classList.toggle("hit", hit);
      if (hit) hits++;
    });
    document.getElementById("filter-count").textContent = query ? hits + " matching" : "";
  }

  // The details of every span come from the native JSON API, fetched once: after the page has loaded,
  // or at the first click or filter keystroke if that comes first.
  var loading = null;
  function load() {
    if (!loading) loading = fetchDetails();
    return loading;
  }

  document.addEventListener("click", function (event) {
    if (!(event.target instanceof Element)) return;
    var toggle = event.target.closest("#waterfall button.t");
    var row = event.target.closest("#waterfall .r");
    if (!row) return;
    if (toggle) {
      setCollapsed(row, !row.classList.contains("collapsed"));
      refresh();
      return;
    }
    history.replaceState(null, "", "#" + row.dataset.id);
    show(row.dataset.id);
    load();
  });

  document.getElementById("collapse-all").addEventListener("click", function () {
    allCollapsed = true;
    allRows().forEach(function (r) { if (r.querySelector("button.t")) setCollapsed(r, true); });
    refresh();
  });
  document.getElementById("expand-all").addEventListener("click", function () {
    allCollapsed = false;
    allRows().forEach(function (r) { setCollapsed(r, false); });
    refresh();
  });
  var pending = null;
  document.getElementById("filter").addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(applyFilter, 120);
    load();
  });

  function fetchDetails() {
    return fetch("/api/traces/" + encodeURIComponent(traceId))
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (trace) {
        spans = {};
        trace.spans.forEach(function (entry) {
          var s = entry.span;
          spans[s.spanId] = entry;
          var start = BigInt(s.startTimeUnixNano);
          if (traceStart === null || start < traceStart) traceStart = start;
          var parts = [s.name];
          (s.attributes || []).forEach(function (kv) { parts.push(kv.key + "=" + valueText(kv.value)); });
          (entry.resource.attributes || []).forEach(function (kv) { parts.push(valueText(kv.value)); });
          searchText[s.spanId] = parts.join(" ").toLowerCase();
        });
        var selected = location.hash.slice(1);
        if (selected && spans[selected]) show(selected);
        else {
          var current = document.querySelector("#waterfall .r.selected");
          if (current) show(current.dataset.id);
        }
        applyFilter();
      })
      .catch(function (error) {
        var details = panel();
        if (!details) return;
        details.textContent = "";
        details.appendChild(el("p", "Span details could not be loaded: " + error.message, "error"));
      });
  }

  // One row of the JSON as the same markup the server writes (trace.html); text via textContent.
  function rowElement(r, services) {
    var row = el("div", null, "r k" + r[3] + (r[8] & 1 ? " err" : "") + (r[8] & 2 ? " cp" : ""));
    row.dataset.id = r[0];
    row.dataset.d = r[1];
    row.style.setProperty("--in", r[2] + "px");
    row.style.setProperty("--x", r[5]);
    row.style.setProperty("--w", r[6]);
    if (r[8] & 4) {
      var toggle = el("button", "▾", "t");
      toggle.type = "button";
      toggle.setAttribute("aria-label", "collapse");
      row.appendChild(toggle);
      if (allCollapsed) setCollapsed(row, true);
    }
    row.appendChild(el("span", services[r[3]], "sv"));
    row.appendChild(document.createTextNode(" "));
    row.appendChild(el("span", r[4], "n"));
    row.appendChild(el("i"));
    row.appendChild(el("u", r[7]));
    if (r[0] === selectedId) row.classList.add("selected");
    return row;
  }

  // A link to one span (#<span id>) scrolls its row into view once that row exists: at load for the
  // first rows, after the slice that draws it for the others.
  var linked = location.hash.slice(1);
  function revealLinked() {
    if (!linked) return;
    var row = document.querySelector('#waterfall .r[data-id="' + CSS.escape(linked) + '"]');
    if (!row) return;
    linked = null;
    row.classList.add("selected");
    row.scrollIntoView({ block: "center" });
  }

  function drawMoreRows() {
    var data = document.getElementById("more-rows");
    var box = document.getElementById("waterfall");
    if (!data || !box) return;
    var more = JSON.parse(data.textContent);
    var note = document.getElementById("rows-pending");
    var next = 0;
    function slice() {
      var until = performance.now() + 6;
      var fragment = document.createDocumentFragment();
      do {
        for (var k = 0; k < 100 && next < more.rows.length; k++) {
          fragment.appendChild(rowElement(more.rows[next++], more.services));
        }
      } while (next < more.rows.length && performance.now() < until);
      box.insertBefore(fragment, note);
      revealLinked();
      if (box.querySelector(".r.collapsed")) refresh();
      if (document.getElementById("filter").value.trim() !== "") applyFilter();
      if (next < more.rows.length) {
        setTimeout(slice, 0);
      } else {
        if (note) note.remove();
        performance.mark("waterfall-drawn");
      }
    }
    slice();
  }
  // Start once the page has loaded and its first frame is drawn, so the first rows are on screen first.
  window.addEventListener("load", function () {
    revealLinked();
    requestAnimationFrame(function () { setTimeout(drawMoreRows, 0); });
  });

  // Prefetch only once the page has loaded: building and parsing the JSON of a large trace would
  // otherwise take CPU from parsing the waterfall itself.
  window.addEventListener("load", function () {
    if (location.hash.length > 1) load();
    else if (window.requestIdleCallback) requestIdleCallback(load, { timeout: 2000 });
    else setTimeout(load, 500);
  });
})();
