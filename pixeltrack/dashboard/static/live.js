// Live panel of the website page: polls the page-view counts of the last
// 30 minutes every 5 seconds and draws them as bars. Served from the
// dashboard itself (Content-Security-Policy: script-src 'self'); text from
// the server is set with textContent, never parsed as HTML.
(function () {
  "use strict";
  var panel = document.getElementById("live");
  if (!panel) { return; }
  var source = panel.getAttribute("data-src");
  var total = document.getElementById("live-total");
  var state = document.getElementById("live-state");
  var chart = document.getElementById("live-chart");
  var pages = document.getElementById("live-pages");
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 300, HEIGHT = 40;

  function drawBars(views) {
    while (chart.firstChild) { chart.removeChild(chart.firstChild); }
    var top = Math.max.apply(null, views.concat([1]));
    var step = WIDTH / views.length;
    views.forEach(function (count, i) {
      var height = (count / top) * (HEIGHT - 2);
      var bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", String(i * step + 1));
      bar.setAttribute("y", String(HEIGHT - height));
      bar.setAttribute("width", String(Math.max(step - 2, 1)));
      bar.setAttribute("height", String(height));
      chart.appendChild(bar);
    });
  }

  function listPages(list) {
    while (pages.firstChild) { pages.removeChild(pages.firstChild); }
    list.forEach(function (page) {
      var item = document.createElement("li");
      item.textContent = (page.url || "(no address)") + ": " + page.views;
      pages.appendChild(item);
    });
  }

  function refresh() {
    fetch(source, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        total.textContent = String(data.total);
        drawBars(data.views);
        listPages(data.pages);
        state.textContent = "(updated " + new Date().toLocaleTimeString() + ", every 5 seconds)";
      })
      .catch(function () { state.textContent = "(live numbers unavailable; retrying)"; });
  }

  refresh();
  window.setInterval(refresh, 5000);
})();
