/*
 * pixeltrack page-view snippet. Paste on every page:
 *   <script async src="https://COLLECTOR/t.js" data-site="SITE_KEY"></script>
 *
 * No dependencies. Reports a page view on load and on every in-page
 * navigation, with sendBeacon (POST /r) or, where that refuses, an image
 * (GET /r.gif). What it sends is untrusted at the collector all the same.
 *
 * Written to be read: the collector minifies it once at start-up
 * (collector/snippet.py, with a maintained minifier that also shortens local
 * names), and the served file must stay under 2 KB, about 1.2 KB gzipped
 * (tests/collector/test_page_views.py). Hence the globals passed in as
 * parameters below: as locals the minifier can shorten them.
 *
 * ES5 only (var, no arrow functions): it runs on every page of a site,
 * whatever browsers that site's visitors use.
 */
(function (window, document, navigator, location, history) {
  "use strict";

  // currentScript is missing in old browsers: find the tag by its attribute then.
  var script = document.currentScript || document.querySelector("script[data-site]");
  if (!script) return;
  var siteKey = script.getAttribute("data-site") || "",
    // Views go back to wherever t.js was loaded from.
    collector = script.src.replace(/\/t\.js([?#].*)?$/, ""),
    // The site's settings, as SITE_* bits in pixeltrack/core/tokens.py.
    flags = keyFlags(siteKey),
    cookieless = flags & 1,
    hashViews = flags & 2,
    personal = !(flags & 48), // neither mode unique (16) nor blind (32)
    blind = flags & 32,
    privacySignal = navigator.doNotTrack == "1" || window.doNotTrack == "1" ||
      navigator.globalPrivacyControl === true;
  // Do Not Track / Global Privacy Control stop tracking by default; the site
  // may choose to count such visitors blind instead (4), or to ignore them (8).
  if (privacySignal && !(flags & 8)) {
    if (!(flags & 4)) return;
    blind = 1;
  }

  // The flags carried by the site key (so the page needs no second request).
  // The key is base64url: byte 0 is version and kind, then a varint site id,
  // then a varint flags + 1 (pixeltrack/core/tokens.py). 0 if unreadable: the
  // collector checks the key's signature anyway and drops what is forged.
  function keyFlags(key) {
    var bytes, at = 1, field, value, scale, byte;
    try {
      bytes = atob(key.replace(/-/g, "+").replace(/_/g, "/"));
    } catch (notBase64) {
      return 0;
    }
    for (field = 0; field < 2; field++) {
      value = 0;
      scale = 1;
      do {
        byte = bytes.charCodeAt(at++);
        value += (byte & 127) * scale;
        scale *= 128;
      } while (byte > 127 && at < bytes.length);
    }
    return value && value - 1;
  }

  // The value of cookie `name`, or "".
  function getCookie(name) {
    var found = document.cookie.match("(?:^|; )" + name + "=([^;]*)");
    return found ? found[1] : "";
  }

  // Set cookie `name` for `days` on the widest domain of the site that takes
  // it (example.com for www.example.com; co.uk is refused, so shop.co.uk),
  // at last host-only. Which domain takes it is tried with a throwaway pt_t
  // cookie of a fresh value: trying `name` itself would look accepted when an
  // older cookie of the same value is already there, and it would never be
  // renewed. Returns `value` once the cookie reads back as it, else "".
  function setCookie(name, value, days) {
    var labels = location.hostname.split("."), count = labels.length, attributes,
      probe = "" + Math.random();
    while (count--) {
      attributes = (count ? "; domain=" + labels.slice(count - 1).join(".") : "") + "; path=/; max-age=";
      document.cookie = "pt_t=" + probe + attributes + 9;
      if (getCookie("pt_t") == probe) {
        document.cookie = "pt_t=" + attributes + 0;
        document.cookie = name + "=" + value + attributes + days * 86400 + "; samesite=lax" +
          (location.protocol == "https:" ? "; secure" : "");
        return getCookie(name) == value ? value : "";
      }
    }
    return "";
  }

  // 24 random hex digits.
  function newVisitorId() {
    var random = crypto.getRandomValues(new Uint8Array(12)), id = "", i;
    for (i = 0; i < 12; i++) id += (random[i] + 256).toString(16).slice(1);
    return id;
  }

  // A contact from a tracked e-mail click (pt_c): keep it, then clean the
  // address bar before anything reports the URL (history is not wrapped yet,
  // so this replaceState is no page view).
  var clicked = location.search.match(/[?&]pt_c=([^&#]*)/), visitor = "", contact = "";
  if (clicked) {
    history.replaceState(history.state, "",
      location.href.replace(/([?&])pt_c=[^&#]*&?/, "$1").replace(/[?&](#|$)/, "$1"));
  }
  if (!blind) {
    if (cookieless) {
      // No cookie at all: the contact counts for this view only.
      contact = personal && clicked ? clicked[1] : "";
    } else {
      // An anonymous visitor id for 12 months, renewed on every visit.
      visitor = setCookie("pt_v", getCookie("pt_v") || newVisitorId(), 365);
      // The contact for 10 years; for this view at least when no cookie sticks.
      if (personal) contact = clicked ? setCookie("pt_c", clicked[1], 3650) || clicked[1] : getCookie("pt_c");
    }
  }

  // Report a page view, once per URL. The last URL reported is the next
  // view's referrer.
  var lastUrl;
  function reportView() {
    var url = location.href, view, name, query = [];
    if (!hashViews) url = url.split("#")[0];
    if (url == lastUrl) return;
    // Short field names: they travel with every view (collector/page_views.py reads them).
    view = {
      k: siteKey, u: url, t: document.title, r: lastUrl || document.referrer,
      s: screen.width + "x" + screen.height, l: navigator.language || "",
      v: visitor, c: contact, p: +privacySignal
    };
    lastUrl = url;
    if (navigator.sendBeacon && navigator.sendBeacon(collector + "/r", JSON.stringify(view))) return;
    for (name in view) query.push(name + "=" + encodeURIComponent(view[name]));
    new Image().src = collector + "/r.gif?" + query.join("&");
  }

  // After the page's own handlers ran, so the title is the new page's.
  function reportSoon() {
    setTimeout(reportView);
  }

  // Single-page applications: every history change is a page view.
  ["pushState", "replaceState"].forEach(function (method) {
    var original = history[method];
    history[method] = function () {
      var result = original.apply(this, arguments);
      reportSoon();
      return result;
    };
  });
  window.addEventListener("popstate", reportSoon);
  if (hashViews) window.addEventListener("hashchange", reportSoon);
  // A prerendered page counts when it is shown, if ever.
  if (document.prerendering) document.addEventListener("prerenderingchange", reportView, {once: true});
  else reportView();
})(window, document, navigator, location, history);
