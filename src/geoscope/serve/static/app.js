/* geoscope page: drop photos, see on a map where they were taken.
 * Talks only to this server (/api/...). The map is Leaflet, served from here, over an offline basemap of
 * Natural Earth borders; an online tile layer appears only when the server was started with --tiles.
 * Untrusted text (file names, place names) is always set with textContent, never as HTML. */
(function () {
  "use strict";

  var TOP_K = 5;
  var PARALLEL = 3; // uploads in flight at once; the server batches them together
  var state = { token: sessionStorage.getItem("geoscope-token") || "", config: null, entries: [], current: null,
                queue: [], active: 0, map: null, layers: null };

  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function showError(message) {
    var box = $("error");
    if (!message) { box.hidden = true; box.textContent = ""; return; }
    box.textContent = message;
    box.hidden = false;
  }

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // One readable sentence for any failed call.
  async function problem(resp) {
    try {
      var body = await resp.json();
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    return "the server answered " + resp.status + " " + (resp.statusText || "");
  }

  async function api(path, options) {
    options = options || {};
    options.headers = Object.assign({}, options.headers || {}, headers());
    var resp;
    try {
      resp = await fetch(path, options);
    } catch (e) {
      throw new Error("cannot reach the geoscope server (" + e.message + ")");
    }
    if (resp.status === 401) {
      $("token-box").hidden = false;
      $("token").focus();
      throw new Error(await problem(resp));
    }
    return resp;
  }

  // ---------------------------------------------------------------------------------------- map
  function initMap(cfg) {
    var map = L.map("map", { worldCopyJump: true, minZoom: 0, maxZoom: 12, zoomSnap: 0.5, preferCanvas: false })
      .setView([20, 0], 2);
    state.map = map;
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution("Borders: Natural Earth; places: GeoNames");
    if (cfg.map && cfg.map.tile_url) {
      L.tileLayer(cfg.map.tile_url, { attribution: cfg.map.tile_attribution || "", maxZoom: 19 }).addTo(map);
    }
    api(cfg.map.basemap).then(async function (resp) {
      if (!resp.ok) throw new Error(await problem(resp));
      return resp.json();
    }).then(function (geo) {
      var land = L.geoJSON(geo, {
        interactive: false,
        style: { color: "#7f8c8d", weight: 0.6, fillColor: "#f3efe4", fillOpacity: cfg.map.tile_url ? 0 : 1,
                 className: "gs-country" }
      });
      land.addTo(map);
      land.bringToBack();
      document.body.dataset.basemap = "ready";
    }).catch(function (e) {
      document.body.dataset.basemap = "failed";
      showError("The offline map could not be drawn: " + e.message);
    });
    var legend = L.control({ position: "bottomright" });
    legend.onAdd = function () {
      var box = el("div", "legend");
      box.appendChild(el("div", null, "cell probability"));
      box.appendChild(el("div", "bar"));
      var ends = el("div");
      ends.style.display = "flex";
      ends.style.justifyContent = "space-between";
      ends.appendChild(el("span", null, "low"));
      ends.appendChild(el("span", null, "high"));
      box.appendChild(ends);
      return box;
    };
    legend.addTo(map);
    state.layers = L.layerGroup().addTo(map);
  }

  // YlOrRd, as the PNG maps and KML use
  var RAMP = [[255, 255, 178], [254, 204, 92], [253, 141, 60], [240, 59, 32], [189, 0, 38]];
  function ramp(t) {
    t = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    var i = Math.min(Math.floor(t), RAMP.length - 2), f = t - i, a = RAMP[i], b = RAMP[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(",") + ")";
  }

  function pct(p) { return (100 * p).toFixed(p >= 0.1 ? 0 : 1) + "%"; }

  function placeLabel(c) {
    var p = c.place;
    if (!p) return c.lat.toFixed(3) + ", " + c.lon.toFixed(3);
    if (p.at_sea) return "at sea" + (p.town ? " (near " + p.town + ")" : "");
    return [p.town, p.region, p.country].filter(Boolean).join(", ") || (c.lat.toFixed(3) + ", " + c.lon.toFixed(3));
  }

  function drawOnMap(entry) {
    var map = state.map;
    if (!map) return;
    state.layers.clearLayers();
    var bounds = [];
    var cells = (entry.geojson ? entry.geojson.features : []).filter(function (f) { return f.properties.kind === "cell"; });
    if (cells.length) {
      var pmax = Math.max.apply(null, cells.map(function (f) { return f.properties.probability; })) || 1;
      var heat = L.geoJSON({ type: "FeatureCollection", features: cells }, {
        style: function (f) {
          var t = Math.sqrt(f.properties.probability / pmax);
          return { color: ramp(t), weight: 0.5, fillColor: ramp(t), fillOpacity: 0.12 + 0.5 * t, className: "gs-cell" };
        },
        onEachFeature: function (f, layer) {
          layer.bindTooltip(el("span", null, "cell " + f.properties.cell + ": " + pct(f.properties.probability)), { sticky: true });
        }
      });
      state.layers.addLayer(heat);
      var b = heat.getBounds();
      if (b.isValid() && cells.length < 50) bounds.push(b);
    }
    var pred = entry.result;
    pred.candidates.forEach(function (c, i) {
      var label = el("span", "gs-label", (i + 1) + ". " + placeLabel(c) + " — " + pct(c.probability));
      var marker = L.marker([c.lat, c.lon], { title: (i + 1) + ". " + placeLabel(c), alt: "candidate " + (i + 1),
                                              zIndexOffset: 1000 - i, keyboard: true });
      marker.bindTooltip(label, { permanent: i === 0, direction: "top", offset: [-14, -28] });
      state.layers.addLayer(marker);
      bounds.push(L.latLng(c.lat, c.lon));
    });
    var exif = pred.exif;
    if (exif && exif.lat !== null && exif.lon !== null && exif.lat !== undefined) {
      var claim = L.circleMarker([exif.lat, exif.lon], { radius: 8, color: "#000", weight: 2, fillColor: "#00bcd4",
                                                          fillOpacity: 1, className: "gs-claim" });
      claim.bindTooltip(el("span", null, "claimed by the metadata (EXIF GPS)"));
      state.layers.addLayer(claim);
      bounds.push(L.latLng(exif.lat, exif.lon));
    }
    if (bounds.length) {
      var all = L.latLngBounds(bounds.map(function (b) { return b.getSouthWest ? b : L.latLngBounds(b, b); })
        .reduce(function (acc, b) { return acc.concat([b.getSouthWest(), b.getNorthEast()]); }, []));
      map.fitBounds(all.pad(0.3), { maxZoom: 6, animate: false });
    }
  }

  // ---------------------------------------------------------------------------------------- results
  function renderList() {
    var list = $("results");
    list.textContent = "";
    state.entries.forEach(function (entry, i) {
      var li = el("li", entry.error ? "failed" : "");
      var b = el("button");
      b.type = "button";
      b.appendChild(el("span", "name", entry.name));
      var text = entry.error ? "could not be located" : entry.result ? placeLabel(entry.result.candidates[0]) :
        entry.status;
      b.appendChild(el("span", "state", text));
      if (state.current === i) b.setAttribute("aria-current", "true");
      b.addEventListener("click", function () { select(i); });
      li.appendChild(b);
      list.appendChild(li);
    });
  }

  function select(i) {
    state.current = i;
    renderList();
    var entry = state.entries[i];
    if (entry.error) { showError(entry.name + ": " + entry.error); $("detail").hidden = true; return; }
    showError("");
    if (!entry.result) return;
    var pred = entry.result;
    $("detail").hidden = false;
    $("detail-title").textContent = entry.name;
    $("photo").hidden = false;
    $("photo").onerror = function () { $("photo").hidden = true; }; // e.g. HEIC / TIFF: the browser cannot show it
    $("photo").src = entry.url;
    $("overlay").hidden = true;
    $("overlay-toggle").checked = false;
    $("overlay-toggle").disabled = !entry.attribution;
    $("explain-note").hidden = true;
    var provides = state.config.model.provides;
    $("explain-btn").hidden = !provides.attribution;
    if (entry.attribution) drawOverlay(entry);
    var conf = Object.keys(pred.confidence || {}).sort(function (a, b) { return a - b; })
      .map(function (k) { return pct(pred.confidence[k]) + " within " + k + " km"; });
    $("confidence").textContent = conf.length ? "Confidence: " + conf.join(", ") + " of the best candidate." : "";
    var body = document.querySelector("#candidates tbody");
    body.textContent = "";
    pred.candidates.forEach(function (c, k) {
      var tr = el("tr");
      tr.appendChild(el("td", null, k + 1));
      tr.appendChild(el("td", null, placeLabel(c)));
      tr.appendChild(el("td", null, c.lat.toFixed(4) + ", " + c.lon.toFixed(4)));
      tr.appendChild(el("td", null, pct(c.probability)));
      body.appendChild(tr);
    });
    var v = entry.verification, exif = pred.exif;
    if (exif && exif.lat !== null && exif.lat !== undefined) {
      var km = pred.exif_distance_km;
      $("exif-claim").textContent = "The metadata claims " + exif.lat.toFixed(4) + ", " + exif.lon.toFixed(4) +
        (km !== null && km !== undefined ? " — " + Math.round(km).toLocaleString() + " km from the best candidate." : ".") +
        (exif.time ? " Taken " + exif.time + "." : "") + (exif.make || exif.model ? " Camera: " + [exif.make, exif.model].filter(Boolean).join(" ") + "." : "");
    } else {
      $("exif-claim").textContent = "The file carries no GPS position in its metadata.";
    }
    var verdict = $("verdict");
    verdict.textContent = v ? v.verdict : "";
    verdict.className = "verdict " + (v ? v.verdict : "");
    $("verdict-reason").textContent = v ? v.reason : "";
    drawOnMap(entry);
  }

  function download(name, text, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = el("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  function stem(name) { return name.replace(/\.[^.]*$/, "") || "prediction"; }

  function currentEntry() { return state.current === null ? null : state.entries[state.current]; }

  async function locate(entry) {
    for (var attempt = 0; attempt < 5; attempt++) {
      var form = new FormData();
      form.append("image", entry.file, entry.name);
      form.append("top_k", String(TOP_K));
      form.append("include", "geojson,kml,verification");
      var resp = await api("/api/locate", { method: "POST", body: form });
      if (resp.status === 429) { // busy: wait as told, then try again
        entry.status = "waiting (server busy)";
        renderList();
        await sleep(1000 * Math.min(30, parseInt(resp.headers.get("Retry-After") || "2", 10)));
        continue;
      }
      if (!resp.ok) throw new Error(await problem(resp));
      var body = await resp.json();
      entry.geojson = body.geojson; entry.kml = body.kml; entry.verification = body.verification;
      delete body.geojson; delete body.kml; delete body.verification;
      entry.result = body;
      return;
    }
    throw new Error("the server stayed busy; try again in a minute");
  }

  function pump() {
    while (state.active < PARALLEL && state.queue.length) {
      var entry = state.queue.shift();
      state.active++;
      entry.status = "locating…";
      renderList();
      locate(entry).catch(function (e) { entry.error = e.message; }).then(function (en) {
        return function () {
          state.active--;
          renderList();
          var idx = state.entries.indexOf(en);
          if (state.current === null || state.current === idx && (en.result || en.error)) select(idx);
          document.body.dataset.pending = String(state.queue.length + state.active);
          pump();
        };
      }(entry));
    }
    document.body.dataset.pending = String(state.queue.length + state.active);
  }

  function addFiles(files) {
    showError("");
    Array.prototype.forEach.call(files, function (file) {
      var entry = { file: file, name: file.name || "photo", url: URL.createObjectURL(file), status: "waiting",
                    result: null, error: null };
      state.entries.push(entry);
      state.queue.push(entry);
    });
    if (state.current === null && state.entries.length) state.current = state.entries.length - files.length;
    renderList();
    pump();
  }

  // ---------------------------------------------------------------------------------------- attribution
  function drawOverlay(entry) {
    var a = entry.attribution, img = $("photo"), canvas = $("overlay");
    var draw = function () {
      canvas.width = a.cols; canvas.height = a.rows;
      var ctx = canvas.getContext("2d");
      var lim = 0;
      a.blocks.forEach(function (row) { row.forEach(function (v) { lim = Math.max(lim, Math.abs(v)); }); });
      lim = lim || 1e-12;
      a.blocks.forEach(function (row, y) {
        row.forEach(function (v, x) {
          var t = v / lim; // red: pushed towards the place, blue: away
          ctx.fillStyle = t >= 0 ? "rgba(215,48,39," + (0.65 * t).toFixed(3) + ")" :
            "rgba(69,117,180," + (-0.65 * t).toFixed(3) + ")";
          ctx.fillRect(x, y, 1, 1);
        });
      });
      canvas.style.imageRendering = "pixelated";
    };
    if (img.complete) draw(); else img.addEventListener("load", draw, { once: true });
  }

  async function explainCurrent() {
    var entry = currentEntry();
    if (!entry || !entry.result) return;
    var btn = $("explain-btn");
    btn.disabled = true;
    btn.textContent = "Explaining…";
    try {
      var form = new FormData();
      form.append("image", entry.file, entry.name);
      form.append("method", "occlusion");
      form.append("grid", "6");
      var resp = await api("/api/explain", { method: "POST", body: form });
      if (!resp.ok) throw new Error(await problem(resp));
      var body = await resp.json();
      if (!body.attribution) {
        $("explain-note").textContent = body.attribution_note || "This model gives no attribution.";
        $("explain-note").hidden = false;
        return;
      }
      entry.attribution = body.attribution;
      if (entry === currentEntry()) {
        drawOverlay(entry);
        $("overlay-toggle").disabled = false;
        $("overlay-toggle").checked = true;
        $("overlay").hidden = false;
        $("explain-note").textContent = "Red: regions that pushed the model towards " + body.attribution.target +
          "; blue: away from it (" + body.attribution.method + ", " + body.attribution.n_evals + " model calls).";
        $("explain-note").hidden = false;
      }
    } catch (e) {
      showError("The explanation failed: " + e.message);
    } finally {
      btn.disabled = false;
      btn.textContent = "Show what the model looked at";
    }
  }

  // ---------------------------------------------------------------------------------------- start
  function wire() {
    var drop = $("drop"), input = $("file");
    input.addEventListener("change", function () { if (input.files.length) addFiles(input.files); input.value = ""; });
    $("choose").addEventListener("click", function () { input.click(); });
    ["dragenter", "dragover"].forEach(function (t) {
      drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) { if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files); });
    $("overlay-toggle").addEventListener("change", function (e) { $("overlay").hidden = !e.target.checked; });
    $("explain-btn").addEventListener("click", explainCurrent);
    $("dl-json").addEventListener("click", function () {
      var en = currentEntry();
      if (en && en.result) download(stem(en.name) + ".json", JSON.stringify(en.result, null, 2), "application/json");
    });
    $("dl-geojson").addEventListener("click", function () {
      var en = currentEntry();
      if (en && en.geojson) download(stem(en.name) + ".geojson", JSON.stringify(en.geojson, null, 2), "application/geo+json");
    });
    $("dl-kml").addEventListener("click", function () {
      var en = currentEntry();
      if (en && en.kml) download(stem(en.name) + ".kml", en.kml, "application/vnd.google-earth.kml+xml");
    });
    $("token-box").addEventListener("submit", function (e) {
      e.preventDefault();
      state.token = $("token").value.trim();
      sessionStorage.setItem("geoscope-token", state.token);
      $("token-box").hidden = true;
      start();
    });
  }

  async function start() {
    try {
      var resp = await api("/api/config");
      if (!resp.ok) throw new Error(await problem(resp));
      var cfg = await resp.json();
      state.config = cfg;
      var m = cfg.model;
      $("model").textContent = "model: " + m.name + " (" + m.kind + (m.n_cells ? ", " + m.n_cells + " cells" : "") + ")";
      if (!state.map) initMap(cfg);
      showError("");
      document.body.dataset.ready = "true";
    } catch (e) {
      $("model").textContent = "not connected";
      showError(e.message);
    }
  }

  wire();
  start();
})();
