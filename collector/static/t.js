// pixeltrack page-view snippet. Paste on every page:
//   <script async src="https://COLLECTOR/t.js" data-site="SITE_KEY"></script>
// No dependencies. Reports a page view on load and on every in-page
// navigation, with sendBeacon (POST /r) or an image (GET /r.gif).
// Whole-line comments and indentation are stripped when served.
(function (w, d) {
  "use strict";
  var s = d.currentScript || d.querySelector("script[data-site]");
  if (!s) return;
  var key = s.getAttribute("data-site") || "";
  var base = s.src.replace(/\/t\.js([?#].*)?$/, "");
  var nav = navigator, loc = location, h = w.history;
  // The signed key carries the site's flags: byte 0 is version and kind, then
  // a varint site id, then a varint flags+1 (see pixeltrack/tokens.py).
  var f = 0, b, i = 1, n, c, v, m;
  try {
    b = atob(key.replace(/-/g, "+").replace(/_/g, "/"));
    for (n = 0; n < 2; n++) {
      v = 0; m = 1;
      do { c = b.charCodeAt(i++); v += (c & 127) * m; m *= 128; } while (c > 127 && i < b.length);
    }
    f = v > 0 ? v - 1 : 0;
  } catch (e) { f = 0; }
  var cookieless = f & 1, hashes = f & 2, personal = !(f & 48), anon = f & 32;
  var priv = nav.doNotTrack == "1" || w.doNotTrack == "1" || nav.globalPrivacyControl === true;
  if (priv && !(f & 8)) {
    // Do Not Track / Global Privacy Control: off, or blind if the site says so
    if (!(f & 4)) return;
    anon = 1;
  }

  function get(name) {
    var r = d.cookie.match("(?:^|; )" + name + "=([^;]*)");
    return r ? r[1] : "";
  }
  function set(name, value, days) {
    // the widest domain of the site that takes it (example.com for www.example.com)
    var parts = loc.hostname.split("."), j,
      tail = "; path=/; max-age=" + days * 86400 + "; samesite=lax" + (loc.protocol == "https:" ? "; secure" : "");
    for (j = parts.length - 2; j >= 0; j--) {
      d.cookie = name + "=" + value + "; domain=" + parts.slice(j).join(".") + tail;
      if (get(name) == value) return value;
    }
    d.cookie = name + "=" + value + tail;
    return get(name) == value ? value : "";
  }
  function rnd() {
    var a = new Uint8Array(12), r = "", j;
    crypto.getRandomValues(a);
    for (j = 0; j < 12; j++) r += (a[j] + 256).toString(16).slice(1);
    return r;
  }

  // Contact from a tracked e-mail click: keep it, then clean the address bar
  // before anything reports the URL.
  var q = loc.search.match(/[?&]pt_c=([^&#]*)/), vid = "", con = "";
  if (q) h.replaceState(h.state, "", loc.href.replace(/([?&])pt_c=[^&#]*&?/, "$1").replace(/[?&](#|$)/, "$1"));
  if (!anon && !cookieless) {
    // anonymous visitor id, 12 months, refreshed on every visit
    vid = set("pt_v", get("pt_v") || rnd(), 365);
    if (personal) con = q ? set("pt_c", q[1], 3650) || q[1] : get("pt_c");
  } else if (personal && !anon && q) {
    con = q[1];
  }

  var last;
  function send() {
    var u = hashes ? loc.href : loc.href.split("#")[0];
    if (u == last) return;
    var data = {
      k: key, u: u, t: d.title, r: last || d.referrer, s: screen.width + "x" + screen.height,
      l: nav.language || "", v: vid, c: con, p: priv ? 1 : 0
    }, qs = [], k;
    last = u;
    if (nav.sendBeacon && nav.sendBeacon(base + "/r", JSON.stringify(data))) return;
    for (k in data) qs.push(k + "=" + encodeURIComponent(data[k]));
    new Image().src = base + "/r.gif?" + qs.join("&");
  }
  function later() { setTimeout(send, 0); }
  // single-page applications: every history change is a page view
  function wrap(name) {
    var orig = h[name];
    h[name] = function () { var r = orig.apply(this, arguments); later(); return r; };
  }
  wrap("pushState");
  wrap("replaceState");
  w.addEventListener("popstate", later);
  if (hashes) w.addEventListener("hashchange", later);
  if (d.prerendering) d.addEventListener("prerenderingchange", send, { once: true });
  else send();
})(window, document);
