// The tally page's service worker: it keeps the page and what the page loads, so that the
// page opens in the van with no signal. The network first (a fresh page when there is one,
// and the copy kept up to date), the kept copy when there is none or it takes over 4 s.
// The page's sends (POST /tally) are not touched: they go to the network, and the page
// keeps what fails.
"use strict";
var CACHE = "nspvend-tally-1";

self.addEventListener("install", function (event) {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) {
      return n.indexOf("nspvend-tally-") === 0 && n !== CACHE;
    }).map(function (n) { return caches.delete(n); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) { return; }
  var ours = url.pathname === "/tally" || url.pathname.indexOf("/tally/") === 0 ||
             url.pathname.indexOf("/static/") === 0;
  if (!ours) { return; }
  var fresh = fetch(request).then(function (response) {
    // only a real answer is kept: not the login page a lapsed session is sent to
    if (response.ok && response.type === "basic" && !response.redirected) {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { return cache.put(url.pathname, copy); });
    }
    return response;
  });
  var kept = function () {
    return caches.match(url.pathname).then(function (copy) {
      return copy || fresh;  // nothing kept: wait for the network after all
    });
  };
  // a weak signal: after 4 s the kept copy, rather than a blank page
  var slow = new Promise(function (resolve) { setTimeout(resolve, 4000); }).then(kept);
  event.respondWith(Promise.race([fresh.catch(kept), slow]).catch(function () {
    return Response.error();
  }));
});
