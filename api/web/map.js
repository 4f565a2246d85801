// The coordinators' coverage map: streets from ern's own graphs, H3 cells by band, the week.
// Leaflet is loaded by map.html as the global `L` (vendored in ./vendor/leaflet, no build step).

const TOKEN_KEY = "ern.coordinator-token";
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const COLOURS = { covered: "#2e9d4f", thin: "#f0b429", gap: "#d7301f" };
const ATTRIBUTION = "© OpenStreetMap contributors";

const $ = (id) => document.getElementById(id);
const pad = (n) => String(n).padStart(2, "0");

function hourLabel(hour) {
  return `${DAYS[Math.floor(hour / 24)]} ${pad(hour % 24)}:00`;
}

// Wall-clock fields of an instant in time zone `tz` (the network's ERN_TIMEZONE).
function wall(ms, tz) {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", weekday: "short",
  }).formatToParts(new Date(ms));
  const get = (type) => parts.find((p) => p.type === type).value;
  return {
    y: Number(get("year")), mo: Number(get("month")), d: Number(get("day")),
    h: Number(get("hour")), mi: Number(get("minute")), s: Number(get("second")),
    dow: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(get("weekday")),
  };
}

// The instant at which the clock in `tz` shows the given wall time (DST-safe to the hour).
function instantOf(y, mo, d, h, tz) {
  const guess = Date.UTC(y, mo - 1, d, h);
  let ms = guess;
  for (let i = 0; i < 2; i += 1) {
    const w = wall(ms, tz);
    ms -= Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi, w.s) - guess;
  }
  return ms;
}

// The hour of the week (0 = Monday 00:00) in this week of the network's time zone, as an
// ISO 8601 instant: the service places responders by the network's clock.
function atOf(hour, tz) {
  const now = wall(Date.now(), tz);
  const monday = new Date(Date.UTC(now.y, now.mo - 1, now.d - now.dow + Math.floor(hour / 24)));
  const ms = instantOf(monday.getUTCFullYear(), monday.getUTCMonth() + 1, monday.getUTCDate(), hour % 24, tz);
  return new Date(ms).toISOString();
}

function hourOfWeekNow(tz) {
  const now = wall(Date.now(), tz);
  return now.dow * 24 + now.h;
}

class Unauthorised extends Error {}

async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const url = query.toString() ? `${path}?${query}` : path;
  const answer = await fetch(url, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, Accept: "application/json" },
  });
  if (answer.status === 401 || answer.status === 403) {
    throw new Unauthorised(answer.status === 403 ? "this token is not a coordinator's" : "the token was refused");
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    throw new Error(`${path}: ${answer.status} ${body.detail ? JSON.stringify(body.detail) : ""}`);
  }
  return body;
}

function bandOf(props, minutes) {
  if (props.band) return props.band;
  if (props.gap) return "gap";
  const limit = 0.75 * minutes * 60;
  return typeof props.tk_s === "number" && props.tk_s > limit ? "thin" : "covered";
}

function asMinutes(seconds) {
  if (seconds == null) return "none in reach";
  return `${Math.round(seconds / 60)} min`;
}

function figures(props, band) {
  const rows = [
    ["cell", props.h3],
    ["band", band],
    ["1st responder", asMinutes(props.t1_s)],
    [`k-th responder`, asMinutes(props.tk_s)],
    ["responders within", props.responders_within],
    ["chance someone comes", props.p_covered == null ? "-" : `${Math.round(props.p_covered * 100)} %`],
    ["street length", `${Math.round(props.street_m)} m`],
    ["gap", props.gap ? "yes" : "no"],
  ];
  const table = document.createElement("table");
  table.className = "cell-figures";
  for (const [name, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    const td = tr.insertCell();
    td.textContent = String(value);
    td.dataset.figure = name;
  }
  return table;
}

// The profile's hours, whatever the list is called; each with a share of street length covered.
function profileHours(body) {
  const hours = Array.isArray(body) ? body : body.hours || body.profile || body.items || [];
  return hours.map((h, i) => ({
    hour: h.hour_of_week ?? h.hour ?? i,
    share: h.covered_share ?? h.street_share_covered ?? h.share_covered ?? h.covered_street_share ?? null,
    p: h.mean_p_covered ?? h.p_covered_mean ?? null,
    gaps: h.gap_cells ?? h.n_gap_cells ?? null,
  }));
}

// Red for the week's worst hour, green for its best: a week rarely spans 0-100 %, and the
// question is "which hours are our worst".
function shareColour(share, lo, hi) {
  if (share == null) return "#ddd";
  const t = hi > lo ? (share - lo) / (hi - lo) : 1;
  return `hsl(${Math.round(t * 125)}, 70%, ${Math.round(48 - 6 * t)}%)`;
}

function start() {
  const mapEl = $("map");
  const map = L.map(mapEl, { preferCanvas: false, zoomSnap: 0.25 });
  map.attributionControl.addAttribution(ATTRIBUTION);
  map.setView([0, 0], 2);
  const streetRenderer = L.canvas({ padding: 0.2 });
  let streets = null;
  let streetsMode = null;
  let cells = null;
  let recruits = L.layerGroup().addTo(map);
  let fitted = false;
  let seq = 0;
  let timezone = "UTC";

  const controls = () => ({
    hour: Number($("hour").value),
    mode: $("mode").value,
    minutes: $("minutes").value,
    k: $("k").value,
  });
  const status = (text) => { $("status").textContent = text; };

  function fail(err) {
    if (err instanceof Unauthorised) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(err.message);
      return;
    }
    mapEl.dataset.state = "error";
    status(String(err.message || err));
  }

  async function loadStreets(mode) {
    const graphMode = mode === "all" ? "all" : mode;
    if (streetsMode === graphMode) return;
    const fc = await api("/v1/coverage/streets", { mode: graphMode });
    if (streets) streets.remove();
    streets = L.geoJSON(fc, {
      renderer: streetRenderer,
      interactive: false,
      style: { color: "#4a4a4a", weight: 1.2, opacity: 0.9 },
    }).addTo(map);
    streets.bringToBack();
    streetsMode = graphMode;
    timezone = fc.ern?.timezone || timezone;
    if (!fitted && fc.bbox) {
      const [w, s, e, n] = fc.bbox;
      map.invalidateSize();
      map.fitBounds([[s, w], [n, e]]);
      fitted = true;
    }
  }

  async function loadCells() {
    const c = controls();
    const mine = ++seq;
    mapEl.dataset.state = "loading";
    status(`computing ${hourLabel(c.hour)}…`);
    await loadStreets(c.mode);
    const fc = await api("/v1/coverage", { at: atOf(c.hour, timezone), mode: c.mode, minutes: c.minutes, k: c.k });
    if (mine !== seq) return; // a newer request is on its way
    const minutes = Number(fc.ern?.minutes ?? c.minutes ?? 5) || 5;
    const counts = { covered: 0, thin: 0, gap: 0 };
    if (cells) cells.remove();
    cells = L.geoJSON(fc, {
      style: (f) => {
        const band = bandOf(f.properties, minutes);
        return { color: COLOURS[band], weight: 0.5, fillColor: COLOURS[band], fillOpacity: 0.32, className: `cell cell-${band}` };
      },
      onEachFeature: (f, layer) => {
        const band = bandOf(f.properties, minutes);
        counts[band] += 1;
        layer.bindPopup(() => figures(f.properties, band), { autoPanPaddingTopLeft: [70, 20] });
      },
    }).addTo(map);
    recruits.bringToFront?.();
    const total = fc.features.length;
    $("counts").textContent = `${total} cells: ${counts.covered} covered, ${counts.thin} thin, ${counts.gap} gap`;
    Object.assign(mapEl.dataset, {
      state: "ready", hour: String(c.hour), cells: String(total), gap: String(counts.gap), thin: String(counts.thin),
    });
    const when = fc.ern?.computed_at ? `, computed ${fc.ern.computed_at}` : "";
    status(`${hourLabel(c.hour)} · ${fc.ern?.mode ?? c.mode} · ${minutes} min · k ${fc.ern?.k ?? c.k}${when}`);
    markHour(c.hour);
  }

  async function loadRecruits() {
    recruits.clearLayers();
    if (!$("show-recruit").checked) return;
    const c = controls();
    const mode = c.mode === "all" ? "walk" : c.mode;
    const fc = await api("/v1/coverage/recruit", { n: 10, mode, minutes: c.minutes });
    for (const f of fc.features) {
      const [lon, lat] = f.geometry.coordinates;
      const p = f.properties;
      const icon = L.divIcon({ className: "recruit-icon", html: String(p.rank), iconSize: [24, 24] });
      L.marker([lat, lon], { icon, title: `recruit #${p.rank}` })
        .bindPopup(`<b>Recruit here #${p.rank}</b><br>one more walking volunteer would cover ${Math.round(p.gain_m)} m more street` +
          (p.gain_share == null ? "" : ` (${(p.gain_share * 100).toFixed(1)} % of the area's streets)`))
        .addTo(recruits);
    }
    mapEl.dataset.recruits = String(fc.features.length);
  }

  function markHour(hour) {
    for (const td of document.querySelectorAll("#strip td")) {
      td.classList.toggle("now", Number(td.dataset.hour) === hour);
    }
  }

  async function loadProfile() {
    const c = controls();
    const hours = profileHours(await api("/v1/coverage/profile", { mode: c.mode, minutes: c.minutes, k: c.k }));
    const byHour = new Map(hours.map((h) => [h.hour, h]));
    const shares = hours.map((h) => h.share).filter((v) => v != null);
    const hi = Math.max(...shares);
    // The week's own scale, but spanning at least 20 points: 98 % is never painted red.
    const lo = Math.min(...shares, hi - 0.2);
    const pct = (v) => `${Math.round(v * 100)} %`;
    $("strip-scale").textContent = shares.length ? `red: ${pct(Math.max(lo, 0))} or less of street length covered, green: ${pct(hi)} (the best hour)` : "";
    const strip = $("strip");
    strip.replaceChildren();
    const head = strip.insertRow();
    head.appendChild(document.createElement("th"));
    for (let h = 0; h < 24; h += 1) {
      const th = document.createElement("th");
      th.textContent = h % 3 === 0 ? pad(h) : "";
      head.appendChild(th);
    }
    for (let d = 0; d < 7; d += 1) {
      const tr = strip.insertRow();
      const th = document.createElement("th");
      th.textContent = DAYS[d];
      tr.appendChild(th);
      for (let h = 0; h < 24; h += 1) {
        const hour = d * 24 + h;
        const info = byHour.get(hour) || {};
        const td = tr.insertCell();
        td.dataset.hour = String(hour);
        td.style.background = shareColour(info.share, lo, hi);
        const share = info.share == null ? "?" : `${Math.round(info.share * 100)} %`;
        td.title = `${hourLabel(hour)}: ${share} of streets covered` + (info.gaps == null ? "" : `, ${info.gaps} gap cells`);
        td.addEventListener("click", () => { $("hour").value = String(hour); showHour(); refresh(); });
      }
    }
    markHour(controls().hour);
    mapEl.dataset.profile = "ready";
  }

  function showHour() { $("hour-label").textContent = hourLabel(Number($("hour").value)); }
  const refresh = () => loadCells().catch(fail);
  const refreshAll = () => { refresh(); loadProfile().catch(fail); loadRecruits().catch(fail); };

  $("hour").addEventListener("input", showHour);
  $("hour").addEventListener("change", refresh);
  for (const id of ["mode", "minutes", "k"]) $(id).addEventListener("change", refreshAll);
  $("show-recruit").addEventListener("change", () => loadRecruits().catch(fail));
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });

  // The first street layer tells the network's time zone; the slider opens on its current hour.
  loadStreets($("mode").value)
    .then(() => { $("hour").value = String(hourOfWeekNow(timezone)); showHour(); refreshAll(); })
    .catch(fail);
}

let started = false;

function showLogin(message = "") {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  if (!started) { started = true; start(); }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  if (started) location.reload(); else showApp();
});

if (sessionStorage.getItem(TOKEN_KEY)) showApp(); else showLogin();
