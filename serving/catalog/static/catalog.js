// featurestore catalog: "/" focuses the search box; the search box suggests objects as you type
// (GET /ui/search.json); the search page updates its results as you type. Pages work without it.
(function () {
  "use strict";
  var box = document.getElementById("q");
  var list = document.getElementById("suggestions");
  var live = document.querySelector("[data-live]");

  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable);
    if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      (live || box).focus();
      (live || box).select();
    }
  });

  function fetchHits(params, done) {
    var req = new XMLHttpRequest();
    req.open("GET", "/ui/search.json?" + params.toString());
    req.onload = function () { if (req.status === 200) { done(JSON.parse(req.responseText)); } };
    req.send();
  }

  function debounce(fn) {
    var timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, 120); };
  }

  function item(hit) {
    var a = document.createElement("a");
    a.href = hit.url;
    a.textContent = hit.name;
    var small = document.createElement("small");
    small.textContent = hit.noun + (hit.matched && hit.matched !== "name" ? " · " + hit.matched : "");
    a.appendChild(small);
    return a;
  }

  if (box && list) {
    var close = function () { list.hidden = true; box.setAttribute("aria-expanded", "false"); };
    var suggest = debounce(function () {
      var q = box.value.trim();
      if (!q) { close(); return; }
      fetchHits(new URLSearchParams({q: q, limit: "8"}), function (data) {
        if (box.value.trim() !== q) { return; }
        list.innerHTML = "";
        data.results.forEach(function (hit, i) {
          var li = document.createElement("li");
          li.setAttribute("role", "presentation");
          var a = item(hit);
          a.setAttribute("role", "option");
          a.id = "suggestion-" + i;
          li.appendChild(a);
          list.appendChild(li);
        });
        list.hidden = data.results.length === 0;
        box.setAttribute("aria-expanded", list.hidden ? "false" : "true");
      });
    });
    box.addEventListener("input", suggest);
    box.addEventListener("keydown", function (ev) {
      var links = Array.prototype.slice.call(list.querySelectorAll("a"));
      if (ev.key === "ArrowDown" && links.length && !list.hidden) { ev.preventDefault(); links[0].focus(); }
      if (ev.key === "Escape") { close(); }
    });
    list.addEventListener("keydown", function (ev) {
      var links = Array.prototype.slice.call(list.querySelectorAll("a"));
      var i = links.indexOf(document.activeElement);
      if (ev.key === "ArrowDown" && i < links.length - 1) { ev.preventDefault(); links[i + 1].focus(); }
      if (ev.key === "ArrowUp") { ev.preventDefault(); (i > 0 ? links[i - 1] : box).focus(); }
      if (ev.key === "Escape") { close(); box.focus(); }
    });
    document.addEventListener("click", function (ev) { if (!list.contains(ev.target) && ev.target !== box) { close(); } });
  }

  if (live) {
    var form = live.form;
    var results = document.getElementById("results");
    var found = document.getElementById("found");
    var update = debounce(function () {
      var params = new URLSearchParams(new FormData(form));
      fetchHits(params, function (data) {
        results.innerHTML = "";
        data.results.forEach(function (hit) {
          var li = document.createElement("li");
          li.appendChild(item(hit));
          if (hit.description) { var p = document.createElement("p"); p.textContent = hit.description; li.appendChild(p); }
          results.appendChild(li);
        });
        var empty = results.nextElementSibling;
        if (empty && empty.classList.contains("muted")) { empty.hidden = data.results.length > 0; }
        found.textContent = data.total + " found";
        history.replaceState(null, "", "/ui/search?" + params.toString());
      });
    });
    form.addEventListener("input", update);
    form.addEventListener("change", update);
  }
})();
