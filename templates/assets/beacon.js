/* Cookieless page-view beacon: text/plain JSON to this tag's data-api (no preflight). */
(function (d, n) {
  var s = d.currentScript, api = s && s.getAttribute("data-api");
  if (!api) return;
  function send() {
    var body = JSON.stringify({p: location.pathname, r: d.referrer, u: location.search});
    try {
      if (n.sendBeacon && n.sendBeacon(api, new Blob([body], {type: "text/plain"}))) return;
    } catch (e) {}
    if (window.fetch) {
      fetch(api, {method: "POST", body: body, keepalive: true, credentials: "omit",
        headers: {"Content-Type": "text/plain"}}).catch(function () {});
    }
  }
  if (d.prerendering) d.addEventListener("prerenderingchange", send, {once: true});
  else send();
})(document, navigator);
