// The tally page: staff tap a product each time they give out a pack at the counter, from
// the van or on foot. No framework.
//
// - Every tap is kept at once in this browser's local storage, in a bucket for this person,
//   channel and hour (an id made here, the hour's counts so far), and a running total for
//   the shift. No time of a tap is kept, here or at the hub: only the hour's counts.
// - Buckets with taps the hub has not got are sent (POST /tally, JSON) a moment after the
//   last tap, again when the connection comes back, and every few seconds while it is away.
//   The hub keeps a bucket's latest counts (each change is one version more), so a bucket
//   sent twice counts once, and a send overtaken by a later one changes nothing.
// - The line under the channels says how many taps wait to be sent, and why.
// - A service worker (tally-worker.js) keeps the page, so it opens with no signal.
(function () {
  "use strict";
  var KEY = "nspvend-tally";
  var CACHE = "nspvend-tally-1";  // as in tally-worker.js
  var HOUR_MS = 3600000;
  var SEND_AFTER_MS = 1500;  // after the last tap: a run of taps for one person goes as one
  var RETRY_MS = [3000, 5000, 10000, 15000];  // while the hub cannot be reached
  var KEEP_MS = 2 * 86400000;  // sent buckets are forgotten here two days after their hour
  var MAX_SEND = 100;  // buckets a send (the hub takes 200, and 64 KiB a request)

  var box = document.getElementById("tally");
  if (!box) { return; }
  var user = box.dataset.user;
  var waiting = document.getElementById("tally-waiting");
  var timer = null, sending = false, again = false, failures = 0;
  var away = !navigator.onLine, ended = false, refused = "";

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

  function bucketNow(s, where) {
    var start = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    var startIso = iso(start);
    var id;
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
    var n = 0, p;
    var seen = {};
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
    soon(SEND_AFTER_MS);
  }

  // take back a tap of this shift: from this person's latest bucket holding one (this
  // channel's first), which may already have been sent: it is sent again, corrected
  function undo(product) {
    var where = channel();
    var taken = change(function (s) {
      var sh = shift(s);
      if (!sh[product]) { return false; }
      var best = null, id;
      for (id in s.buckets) {
        var b = s.buckets[id];
        if (b.user !== user || b.refused || !(b.counts[product] > 0)) { continue; }
        var rank = [b.channel === where ? 1 : 0, b.start];
        if (!best || rank[0] > best[0] || (rank[0] === best[0] && rank[1] > best[1])) {
          best = [rank[0], rank[1], b];
        }
      }
      if (!best) { return false; }
      best[2].counts[product] -= 1;
      best[2].version += 1;
      sh[product] -= 1;
      return true;
    });
    if (taken) { soon(SEND_AFTER_MS); }
  }

  function soon(ms) {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(send, ms);
  }

  function send() {
    timer = null;
    if (ended) { return; }
    if (sending) { again = true; return; }
    var s = load();
    var due = [], id;
    for (id in s.buckets) {
      var b = s.buckets[id];
      if (b.user === user && !b.refused && unsent(b) && due.length < MAX_SEND) {
        due.push({id: b.id, channel: b.channel, start: b.start, end: b.end,
                  counts: JSON.parse(JSON.stringify(b.counts)), version: b.version});
      }
    }
    if (!due.length) { render(); return; }
    sending = true;
    fetch("/tally", {method: "POST", credentials: "same-origin", redirect: "manual",
                     headers: {"Content-Type": "application/json"},
                     body: JSON.stringify({buckets: due})})
      .then(function (r) {
        if (r.status === 401 || r.type === "opaqueredirect") { ended = true; return null; }
        if (r.status === 403 || r.status === 400) {
          return r.json().then(function (a) { refused = a.error || "refused"; return null; });
        }
        if (!r.ok) { throw new Error("the hub answered " + r.status); }
        return r.json();
      })
      .then(function (answer) {
        sending = false;
        away = false;
        failures = 0;
        if (answer && answer.buckets) {
          change(function (s) {
            answer.buckets.forEach(function (a, i) {
              var b = s.buckets[due[i].id];
              if (!b) { return; }
              if (a.ok) { b.sent = due[i].counts; } else { b.refused = a.error || "refused"; }
            });
            forgetOld(s);
          });
        } else {
          render();
        }
        if (again || pending(load())) { again = false; soon(SEND_AFTER_MS); }
      })
      .catch(function () {
        sending = false;
        away = true;
        failures += 1;
        render();
        soon(RETRY_MS[Math.min(failures, RETRY_MS.length) - 1]);
      });
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
    var words;
    if (n === 0) {
      words = "Nothing waiting to be sent: the hub has every tap.";
    } else if (ended) {
      words = plural(n, "tap waits", "taps wait") + " to be sent: your login has ended. " +
              "Log in again to send them; they are kept on this device.";
    } else if (away) {
      words = "No connection to the hub. " + plural(n, "tap waits", "taps wait") +
              " to be sent, kept on this device; they go when the connection is back.";
    } else {
      words = "Sending " + plural(n, "tap", "taps") + " to the hub…";
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
    }
  });
  box.addEventListener("change", function (event) {
    if (event.target.name === "channel") {
      change(function (s) { s.channel = event.target.value; });
    }
  });
  window.addEventListener("online", function () { away = false; soon(0); });
  window.addEventListener("offline", function () { away = true; render(); });
  window.addEventListener("storage", function (event) { if (event.key === KEY) { render(); } });

  // the channel: as asked in the address, else as last chosen on this device
  var kept = load().channel;
  if (!box.dataset.chosen && kept) {
    var radio = box.querySelector("input[name=channel][value='" + kept.replace(/[^a-z0-9-]/g, "") + "']");
    if (radio) { radio.checked = true; }
  }
  render();
  soon(0);
}());
