// SQL console: Ctrl+Enter runs, successful queries go into a history kept in localStorage.
(function () {
  "use strict";
  var KEY = "meshscope.sql.history";
  var LIMIT = 30;
  var editor = document.getElementById("sql");
  var list = document.getElementById("history");

  function load() {
    try {
      var items = JSON.parse(localStorage.getItem(KEY) || "[]");
      return Array.isArray(items) ? items.filter(function (q) { return typeof q === "string"; }) : [];
    } catch (e) {
      return [];
    }
  }

  function save(items) {
    try { localStorage.setItem(KEY, JSON.stringify(items.slice(0, LIMIT))); } catch (e) { /* storage full or disabled */ }
  }

  function render() {
    list.textContent = "";
    load().forEach(function (query) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "/sql?q=" + encodeURIComponent(query);
      a.textContent = query.length > 120 ? query.slice(0, 120) + "…" : query;
      a.title = query;
      li.appendChild(a);
      list.appendChild(li);
    });
  }

  var ran = document.getElementById("result");
  var query = editor.value.trim();
  if (ran && query) {
    save([query].concat(load().filter(function (q) { return q !== query; })));
  }
  render();

  document.getElementById("clear-history").addEventListener("click", function () {
    save([]);
    render();
  });
  editor.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      document.getElementById("sql-form").submit();
    }
  });
})();
