// Live per-host progress of an offboarding request: polls progress.json every second and
// rewrites the table with textContent only (a host's detail is text, never markup).
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.getAttribute("data-url");
  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) {
      var span = document.createElement("span");
      span.className = "badge " + cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text === null ? "" : String(text);
    }
    row.appendChild(td);
  }
  function draw(data) {
    var body = document.querySelector("#progress tbody");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    data.hosts.forEach(function (h) {
      var row = document.createElement("tr");
      cell(row, h.host);
      cell(row, h.state, h.state);
      cell(row, h.detail);
      cell(row, h.updated);
      body.appendChild(row);
    });
    var state = document.querySelector("dd .badge:last-child");
    document.body.setAttribute("data-state", data.state);
    if (state) { state.textContent = data.state; state.className = "badge " + data.state; }
    return data.state === "running" || data.state === "queued";
  }
  function poll() {
    fetch(url, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) { if (draw(data)) { setTimeout(poll, 1000); } })
      .catch(function () { setTimeout(poll, 5000); });
  }
  poll();
}());
