// The tally page: staff tap a product each time they give out a pack at the counter, from
// the van or on foot. No framework.
//
// - Every tap is kept at once in this browser's local storage, in a bucket for this person,
//   channel and hour (an id made here, the hour's counts so far, a version one more at each
//   change), and a running total for the shift. No time of a tap is kept, here or at the hub.
// - The same rule as the machine's: what a tap causes is told when its hour closes. A bucket
//   is sent (POST /tally, JSON) once its hour has ended; before that only when staff start a
//   new shift, or when the connection comes back after it was lost (so that taps made with
//   no signal are safe at the hub as soon as it can have them). Never at a tap: the moment a
//   send arrives must not say when a pack was given.
// - The hub keeps a bucket's newest version, so a bucket sent twice counts once, and a send
//   overtaken by a later one changes nothing.
// - A light request every 5 s (/healthz) tells whether the hub can be reached; the line
//   under the channels says how many taps wait to be sent, and why.
// - A service worker (tally-worker.js) keeps the page, so it opens with no signal.
(function () {
  "use strict";
  var KEY = "nspvend-tally";
  var CACHE = "nspvend-tally-1";  // as in tally-worker.js
  var HOUR_MS = 3600000;
  var PING_MS = 5000;  // is the hub there? (never tied to a tap)
  var RETRY_MS = [3000, 5000, 10000, 15000];  // a send that failed, again
  var KEEP_MS = 2 * 86400000;  // sent buckets are forgotten here two days after their hour
  var batch = 50;  // buckets a send (halved if the hub finds a send too large)

  var box = document.getElementById("tally");
  if (!box) { return; }
  var user = box.dataset.user;
  var waiting = document.getElementById("tally-waiting");
  var timer = null, sending = false, again = false, failures = 0, flush = false;
  var away = !navigator.onLine, ended = "", refused = "";

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/tally-worker.js", {scope: "/tally"})
      .then(keepForOffline)
      .catch(function () {
        // no service worker (a plain-http address other than localhost): the page still
        // keeps and sends its taps while it is open
      });
  }

  // the page and all it loads, kept for the worker to give when there is no signal (it
  // keeps what passes through it too, but the first visit came before it)
  function keepForOffline() {
    if (!window.caches) { return; }
    var urls = ["/tally", "/static/hub.css", "/static/hub.js", "/static/tally.js"];
    Array.prototype.forEach.call(document.images, function (img) {
      urls.push(new URL(img.src).pathname);
    });
    caches.open(CACHE).then(function (cache) {
      urls.forEach(function (u) {
        fetch(u, {credentials: "same-origin"}).then(function (r) {
          if (r.ok && !r.redirected) { return cache.put(u, r); }
          return null;
        }).catch(function () { /* no signal now: kept from an earlier visit, or next time */ });
      });
    });
  }

  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY));
      if (s && typeof s.buckets === "object" && typeof s.shifts === "object") { return s; }
    } catch (e) { /* nothing kept yet, or not ours */ }
    return {buckets: {}, shifts: {}, channel: null};
  }

  function save(s) { localStorage.setItem(KEY, JSON.stringify(s)); }

  // change the kept state: read it afresh (another tab may have written), change, write back
  function change(f) {
    var s = load();
    var result = f(s);
    save(s);
    render();
    return result;
  }

  function iso(ms) { return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"); }

  function newId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "t-" + Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function channel() {
    var picked = box.querySelector("input[name=channel]:checked");
    return picked ? picked.value : null;
  }

  function shift(s) {
    if (!s.shifts[user]) { s.shifts[user] = {}; }
    return s.shifts[user];
  }

  function hourNow() { return Math.floor(Date.now() / HOUR_MS) * HOUR_MS; }

  function bucketNow(s, where) {
    var start = hourNow(), startIso = iso(start), id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.user === user && b.channel === where && b.start === startIso && !b.refused) {
        return b;
      }
    }
    id = newId();
    s.buckets[id] = {id: id, user: user, channel: where, start: startIso,
                     end: iso(start + HOUR_MS), counts: {}, sent: {}, version: 0};
    return s.buckets[id];
  }

  function unsent(b) {
    var n = 0, p, seen = {};
    for (p in b.counts) { seen[p] = true; }
    for (p in b.sent) { seen[p] = true; }
    for (p in seen) { n += Math.abs((b.counts[p] || 0) - (b.sent[p] || 0)); }
    return n;
  }

  function add(product) {
    var where = channel();
    if (!where) { return; }
    change(function (s) {
      var b = bucketNow(s, where);
      b.counts[product] = (b.counts[product] || 0) + 1;
      b.version += 1;
      var sh = shift(s);
      sh[product] = (sh[product] || 0) + 1;
    });
  }

  // take back a tap of this shift: from this person's latest bucket holding one (of two
  // hours alike, this channel's), which may have been sent already: it is sent again, right
  function undo(product) {
    var where = channel();
    change(function (s) {
      var sh = shift(s);
      if (!sh[product]) { return; }
      var best = null, id;
      for (id in s.buckets) {
        var b = s.buckets[id];
        if (b.user !== user || b.refused || !(b.counts[product] > 0)) { continue; }
        var rank = b.start + (b.channel === where ? "1" : "0");
        if (!best || rank > best[0]) { best = [rank, b]; }
      }
      if (!best) { return; }
      best[1].counts[product] -= 1;
      best[1].version += 1;
      sh[product] -= 1;
    });
  }

  function soon(ms) {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(send, ms);
  }

  // what may be sent now: closed hours, or everything after a new shift or the connection's
  // return
  function due(s) {
    var out = [], now = iso(Date.now()), id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.user === user && !b.refused && unsent(b) && (flush || b.end <= now)) { out.push(b); }
    }
    return out;
  }

  function send() {
    timer = null;
    if (ended || refused) { return; }  // until the page is opened again, or shown again
    if (sending) { again = true; return; }
    var going = due(load()).slice(0, batch).map(function (b) {
      return {id: b.id, channel: b.channel, start: b.start, end: b.end,
              counts: JSON.parse(JSON.stringify(b.counts)), version: b.version};
    });
    if (!going.length) { flush = false; render(); return; }
    sending = true;
    fetch("/tally", {method: "POST", credentials: "same-origin", redirect: "manual",
                     headers: {"Content-Type": "application/json"},
                     body: JSON.stringify({user: user, buckets: going})})
      .then(function (r) {
        if (r.status === 401 || r.type === "opaqueredirect") {
          ended = "Your login has ended.";
          return null;
        }
        if (r.status === 409 || r.status === 403) {  // another person logged in; or not staff
          return r.json().then(function (a) {
            ended = r.status === 403 ? "Only staff may tally." :
              "Someone else has logged in on this device since this page was opened.";
            refused = a.error || "";
            return null;
          });
        }
        if (r.status === 413 && batch > 1) {
          batch = Math.ceil(batch / 2);
          return {again: true};
        }
        if (r.status === 400) {  // the hub cannot read what this page sends: say so, stop
          return r.json().then(function (a) { refused = a.error || "refused"; return null; });
        }
        if (!r.ok) { throw new Error("the hub answered " + r.status); }
        return r.json();
      })
      .then(function (answer) {
        sending = false;
        failures = 0;
        back();
        if (answer && answer.buckets) {
          change(function (s) {
            answer.buckets.forEach(function (a, i) {
              var b = s.buckets[going[i].id];
              if (!b) { return; }
              if (a.ok) { b.sent = going[i].counts; } else { b.refused = a.error || "refused"; }
            });
            forgetOld(s);
          });
        } else {
          render();
        }
        if (!ended && !refused && (again || (answer && due(load()).length))) {
          again = false;
          soon(0);
        } else if (!due(load()).length) {
          flush = false;
        }
      })
      .catch(function () {
        sending = false;
        lost();
        failures += 1;
        soon(RETRY_MS[Math.min(failures, RETRY_MS.length) - 1]);
      });
  }

  function lost() {
    if (!away) { away = true; }
    render();
  }

  // the hub answered: if it could not be reached before, send everything now
  function back() {
    if (away) {
      away = false;
      flush = true;
      soon(0);
    }
  }

  function ping() {
    fetch("/healthz", {credentials: "same-origin", cache: "no-store"})
      .then(function () { back(); render(); }, lost);
  }

  // every hour's close: what it held goes now
  function atTheHour() {
    soon(0);
    setTimeout(atTheHour, hourNow() + HOUR_MS - Date.now() + 2000);
  }

  function pending(s) {
    var n = 0, id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.user === user && !b.refused) { n += unsent(b); }
    }
    return n;
  }

  function forgetOld(s) {
    var cutoff = iso(Date.now() - KEEP_MS), id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.end < cutoff && !unsent(b) && !b.refused) { delete s.buckets[id]; }
    }
  }

  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  function clock(ms) {
    var d = new Date(ms);
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
  }

  function render() {
    var s = load();
    var sh = s.shifts[user] || {};
    var total = 0;
    Array.prototype.forEach.call(box.querySelectorAll("[data-shift]"), function (el) {
      var n = sh[el.dataset.shift] || 0;
      total += n;
      el.textContent = n + " this shift";
    });
    Array.prototype.forEach.call(box.querySelectorAll(".tally-undo"), function (b) {
      b.disabled = !(sh[b.dataset.product] > 0);  // nothing of this shift to take back
    });
    document.getElementById("tally-total").textContent = String(total);
    var last = (s.lastShift || {})[user];
    document.getElementById("tally-last").textContent =
      last === undefined ? "" : "The shift before: " + plural(last, "pack", "packs") + ".";
    var n = pending(s), others = {}, badTaps = 0, id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.refused && b.user === user) { badTaps += unsent(b); }
      if (b.user !== user && !b.refused && unsent(b)) {
        others[b.user] = (others[b.user] || 0) + unsent(b);
      }
    }
    var words, wait = plural(n, "tap waits", "taps wait") + " to be sent";
    if (n === 0) {
      words = "Nothing waiting to be sent: the hub has every tap.";
    } else if (ended) {
      words = wait + ", kept on this device. " + ended + " Log in again to send them.";
    } else if (away) {
      words = "No connection to the hub. " + wait + ", kept on this device; they go when " +
              "the connection is back.";
    } else if (sending || due(s).length) {
      words = "Sending " + plural(n, "tap", "taps") + " to the hub…";
    } else {
      words = wait + ", kept on this device: they go when this hour ends, at " +
              clock(hourNow() + HOUR_MS) + " (so that when they arrive does not say when " +
              "a pack was given), or when you start a new shift.";
    }
    if (refused) { words += " The hub refused what was sent: " + refused; }
    if (badTaps) {
      words += " The hub refused " + plural(badTaps, "tap", "taps") + ": " +
               firstRefusal(s) + " Tell whoever runs the hub.";
    }
    Object.keys(others).forEach(function (who) {
      words += " " + plural(others[who], "tap", "taps") + " by " + who + " wait for " + who +
               " to log in here.";
    });
    if (waiting.textContent !== words) { waiting.textContent = words; }
    waiting.className = "tally-waiting" + (n ? " is-waiting" : "") + (away || ended ? " is-away" : "");
    waiting.dataset.waiting = String(n);
    var login = document.getElementById("tally-login");
    if (ended && !login) {
      login = document.createElement("a");
      login.id = "tally-login";
      login.className = "button";
      login.href = "/login?next=/tally";
      login.textContent = "Log in again";
      waiting.insertAdjacentElement("afterend", login);
    }
  }

  function firstRefusal(s) {
    for (var id in s.buckets) {
      if (s.buckets[id].refused && s.buckets[id].user === user) { return s.buckets[id].refused; }
    }
    return "";
  }

  box.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) { return; }
    if (button.classList.contains("tally-add")) { add(button.dataset.product); }
    else if (button.classList.contains("tally-undo")) { undo(button.dataset.product); }
    else if (button.id === "tally-new-shift") {
      change(function (s) {
        var before = 0, p;
        for (p in shift(s)) { before += s.shifts[user][p]; }
        s.lastShift = s.lastShift || {};
        s.lastShift[user] = before;
        s.shifts[user] = {};
      });
      flush = true;  // the shift's taps go now, not at the hour
      soon(0);
    }
  });
  box.addEventListener("change", function (event) {
    if (event.target.name === "channel") {
      change(function (s) { s.channel = event.target.value; });
    }
  });
  window.addEventListener("online", ping);
  window.addEventListener("offline", lost);
  window.addEventListener("storage", function (event) { if (event.key === KEY) { render(); } });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && ended) {  // logged in again elsewhere?
      ended = "";
      refused = "";
      soon(0);
    }
  });

  // the channel: as asked in the address, else as last chosen on this device
  var kept = load().channel;
  if (!box.dataset.chosen && kept) {
    var radio = box.querySelector("input[name=channel][value='" + kept.replace(/[^a-z0-9-]/g, "") + "']");
    if (radio) { radio.checked = true; }
  }
  render();
  setInterval(ping, PING_MS);
  ping();
  atTheHour();
}());
