// Trace view interaction: the waterfall as a virtual list, collapse/expand subtrees, span details on
// click, and a highlight filter. Everything taken from span data is inserted with textContent, never as
// markup.
//
// The server writes the first screen of rows as HTML, so they are painted before this script runs, and
// every row as compact JSON in #rows-json (waterfall::rows_json: [id, depth, indent, colour, name,
// left, width, duration, flags]). This script (loaded with defer, so it runs once the page is parsed)
// replaces the HTML rows with a virtual list: only the rows in view, plus a margin, exist in the DOM,
// inside a box as tall as all visible rows. Collapse, the filter and links to a span work on the JSON,
// so a trace of 10,000 spans is whole and usable as soon as it is parsed.
// performance.mark("waterfall-ready") records that moment.
(function () {
  "use strict";
  var toolbar = document.getElementById("trace-toolbar");
  var data = document.getElementById("rows-json");
  var box = document.getElementById("rows");
  if (!toolbar || !data || !box) return;
  var traceId = toolbar.dataset.traceId;
  var filterBox = document.getElementById("filter");
  var spans = null; // span id -> native API entry, once loaded
  var traceStart = null;
  var searchText = {}; // span id -> lowercase text the filter matches, once details are loaded
  var selectedId = null; // span whose details are shown

  // Rows drawn beyond the screen's edges, so a short scroll shows rows that already exist.
  var MARGIN_ROWS = 30;
  var parsed = JSON.parse(data.textContent);
  var rows = parsed.rows;
  var services = parsed.services;
  var indexOf = new Map();
  rows.forEach(function (r, i) { indexOf.set(r[0], i); });
  var collapsed = new Uint8Array(rows.length);
  var hit = new Uint8Array(rows.length);
  var hits = 0;
  // visible[p] is the row at position p with collapsed subtrees left out; position[i] is row i's
  // position, or -1 when it is under a collapsed row. shown counts the positions.
  var visible = new Int32Array(rows.length);
  var position = new Int32Array(rows.length);
  var shown = 0;
  // The box holds the rows of positions [from, to), in order.
  var from = 0;
  var to = 0;
  var firstRow = box.querySelector(".r");
  var rowHeight = firstRow ? firstRow.getBoundingClientRect().height : 22;

  var KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];
  var STATUS = ["unset", "ok", "error"];

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
    var details = document.getElementById("details");
    if (!details) return;
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

  // Computes which rows are visible: a collapsed row hides every later row deeper than it, up to the
  // next row at its depth or above.
  function layoutRows() {
    var hideBelow = Infinity;
    shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var d = rows[i][1];
      if (d <= hideBelow) hideBelow = Infinity;
      if (hideBelow === Infinity) {
        visible[shown] = i;
        position[i] = shown++;
        if (collapsed[i]) hideBelow = d;
      } else {
        position[i] = -1;
      }
    }
    box.style.height = shown * rowHeight + "px";
    redraw();
  }

  // One row as the same markup the server writes (trace.html), with the current state.
  function rowElement(i) {
    var r = rows[i];
    var row = el("div", null, "r k" + r[3] + (r[8] & 1 ? " err" : "") + (r[8] & 2 ? " cp" : ""));
    row.dataset.id = r[0];
    row.dataset.d = r[1];
    row.style.setProperty("--in", r[2] + "px");
    row.style.setProperty("--x", r[5]);
    row.style.setProperty("--w", r[6]);
    if (r[8] & 4) {
      var toggle = el("button", collapsed[i] ? "▸" : "▾", "t");
      toggle.type = "button";
      toggle.setAttribute("aria-label", collapsed[i] ? "expand" : "collapse");
      row.appendChild(toggle);
      if (collapsed[i]) row.classList.add("collapsed");
    }
    row.appendChild(el("span", services[r[3]], "sv"));
    row.appendChild(document.createTextNode(" "));
    row.appendChild(el("span", r[4], "n"));
    row.appendChild(el("i"));
    row.appendChild(el("u", r[7]));
    if (hit[i]) row.classList.add("hit");
    if (r[0] === selectedId) row.classList.add("selected");
    return row;
  }

  // The positions on screen, [first, last).
  function onScreen() {
    var top = box.getBoundingClientRect().top;
    var first = Math.max(0, Math.floor(-top / rowHeight));
    return [first, Math.max(first, Math.min(shown, Math.ceil((window.innerHeight - top) / rowHeight)))];
  }

  // Brings the box to the rows on screen and the margin around them. Rows that stay are kept (with
  // their focus and hover); rows that leave are removed, rows that enter are added at either end.
  function draw() {
    var screen = onScreen();
    var first = Math.max(0, screen[0] - MARGIN_ROWS);
    var last = Math.min(shown, screen[1] + MARGIN_ROWS);
    if (first >= to || last <= from) {
      box.textContent = "";
      from = to = first;
    }
    for (; from < first; from++) box.firstChild.remove();
    for (; to > last; to--) box.lastChild.remove();
    var before = document.createDocumentFragment();
    for (var p = first; p < from; p++) before.appendChild(rowElement(visible[p]));
    box.insertBefore(before, box.firstChild);
    var after = document.createDocumentFragment();
    for (p = to; p < last; p++) after.appendChild(rowElement(visible[p]));
    box.appendChild(after);
    from = first;
    to = last;
    box.style.paddingTop = first * rowHeight + "px";
  }

  // Draws the rows in view afresh, after the visible rows changed.
  function redraw() {
    box.textContent = "";
    from = to = 0;
    draw();
  }

  // Updates the hit and selected marks of the rows in the box.
  function restyle() {
    for (var node = box.firstChild, p = from; node; node = node.nextSibling, p++) {
      var i = visible[p];
      node.classList.toggle("hit", hit[i] === 1);
      node.classList.toggle("selected", rows[i][0] === selectedId);
    }
  }

  var drawPending = false;
  function drawSoon() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(function () {
      drawPending = false;
      draw();
    });
  }

  // Scrolls row i to the middle of the screen, expanding the rows it is collapsed under.
  function reveal(i) {
    if (position[i] < 0) {
      for (var k = i - 1, depth = rows[i][1]; k >= 0 && depth > 0; k--) {
        if (rows[k][1] < depth) {
          collapsed[k] = 0;
          depth = rows[k][1];
        }
      }
      layoutRows();
    }
    var y = box.getBoundingClientRect().top + window.scrollY + position[i] * rowHeight;
    window.scrollTo(0, Math.max(0, y + rowHeight / 2 - window.innerHeight / 2));
    draw();
  }

  function select(id) {
    selectedId = id;
    restyle();
    show(id);
  }

  // Marks the rows matching the filter. Until the span details are loaded a row matches on its service,
  // name and duration; after, on its attributes and resource too. When no match is on screen, the
  // first one is scrolled to, once per query; Enter in the filter box goes to the next match.
  var jumpedFor = "";
  var lastHit = -1;
  function applyFilter() {
    var query = filterBox.value.trim().toLowerCase();
    hits = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var text = searchText[r[0]];
      if (text === undefined) text = (services[r[3]] + " " + r[4] + " " + r[7]).toLowerCase();
      hit[i] = query !== "" && text.indexOf(query) !== -1 ? 1 : 0;
      hits += hit[i];
    }
    document.getElementById("filter-count").textContent =
      query ? hits + " matching" + (hits > 1 ? " (Enter: next)" : "") : "";
    restyle();
    if (hits > 0 && query !== jumpedFor && !hitOnScreen()) {
      jumpedFor = query;
      lastHit = -1;
      nextHit();
    }
  }

  function hitOnScreen() {
    var screen = onScreen();
    for (var p = screen[0]; p < screen[1]; p++) if (hit[visible[p]]) return true;
    return false;
  }

  function nextHit() {
    if (hits === 0) return;
    var i = lastHit;
    do { i = (i + 1) % rows.length; } while (!hit[i]);
    lastHit = i;
    reveal(i);
  }

  box.addEventListener("click", function (event) {
    if (!(event.target instanceof Element)) return;
    var row = event.target.closest(".r");
    if (!row) return;
    var i = indexOf.get(row.dataset.id);
    if (event.target.closest("button.t")) {
      collapsed[i] ^= 1;
      layoutRows();
      var again = box.querySelector('.r[data-id="' + CSS.escape(row.dataset.id) + '"] button.t');
      if (again) again.focus();
      return;
    }
    history.replaceState(null, "", "#" + row.dataset.id);
    select(row.dataset.id);
    load();
  });

  document.getElementById("collapse-all").addEventListener("click", function () {
    for (var i = 0; i < rows.length; i++) collapsed[i] = rows[i][8] & 4 ? 1 : 0;
    layoutRows();
  });
  document.getElementById("expand-all").addEventListener("click", function () {
    collapsed.fill(0);
    layoutRows();
  });
  var pending = null;
  filterBox.addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(applyFilter, 120);
    load();
  });
  filterBox.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") return;
    event.preventDefault();
    nextHit();
  });
  window.addEventListener("scroll", drawSoon, { passive: true });
  window.addEventListener("resize", drawSoon);

  // The details of every span come from the native JSON API, fetched once: after the page has loaded,
  // or at the first click or filter keystroke if that comes first.
  var loading = null;
  function load() {
    if (!loading) loading = fetchDetails();
    return loading;
  }

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
        if (selectedId) show(selectedId);
        applyFilter();
      })
      .catch(function (error) {
        var details = document.getElementById("details");
        if (!details) return;
        details.textContent = "";
        details.appendChild(el("p", "Span details could not be loaded: " + error.message, "error"));
      });
  }

  // Take over from the HTML rows.
  var note = document.getElementById("rows-pending");
  if (note) note.remove();
  layoutRows();
  var linked = indexOf.get(location.hash.slice(1));
  if (linked !== undefined) {
    selectedId = rows[linked][0];
    reveal(linked);
  }
  if (filterBox.value.trim() !== "") applyFilter();
  performance.mark("waterfall-ready");

  // Prefetch only once the page has loaded: building and parsing the JSON of a large trace would
  // otherwise compete with the page's own loading.
  window.addEventListener("load", function () {
    if (selectedId) load();
    else if (window.requestIdleCallback) requestIdleCallback(load, { timeout: 2000 });
    else setTimeout(load, 500);
  });
})();
