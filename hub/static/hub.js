// The hub's pages work without this; with it:
// - the fleet board updates itself every 3 s, keeps keyboard focus and scroll where they
//   were, tells a screen reader what changed (a polite live region), and when the login has
//   ended says so and takes the person to the login page (and back here after it);
// - a command's button shows it is waiting, and every command button is disabled until the
//   machine answers or the hub gives up (30 s), so nothing is sent twice;
// - Print buttons print.
(function () {
  "use strict";
  var REFRESH_MS = 3000;
  var LOGIN_AFTER_MS = 5000;

  function board(box) {
    var announce = document.getElementById("announce");
    var timer = setInterval(refresh, REFRESH_MS);

    function refresh() {
      fetch(box.getAttribute("data-refresh"), {credentials: "same-origin", redirect: "manual"})
        .then(function (r) {
          if (r.status === 401 || r.type === "opaqueredirect") {
            clearInterval(timer);
            ended();
            return null;
          }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null) merge(html); })
        .catch(function () { /* the hub is restarting: try again next time */ });
    }

    function merge(html) {
      var fresh = document.createElement("div");
      fresh.innerHTML = html;
      var now = Array.prototype.slice.call(fresh.children);
      var was = Array.prototype.slice.call(box.children);
      if (now.length === was.length && now.every(function (e, i) {
        return e.outerHTML === was[i].outerHTML;
      })) { return; }
      var before = {};
      was.forEach(function (e) { if (e.dataset.machine) before[e.dataset.machine] = e.dataset.say; });
      var said = [];
      now.forEach(function (e) {
        var id = e.dataset.machine;
        if (id && id in before && before[id] !== e.dataset.say) {
          said.push(e.dataset.name + ": " + e.dataset.say);
        }
      });
      var focused = document.activeElement;
      var focusHref = focused && box.contains(focused) ? focused.getAttribute("href") : null;
      var x = window.scrollX, y = window.scrollY;
      box.replaceChildren.apply(box, now);
      if (focusHref) {
        var again = box.querySelector('a[href="' + CSS.escape(focusHref) + '"]');
        if (again) again.focus({preventScroll: true});
      }
      window.scrollTo(x, y);
      if (said.length && announce) announce.textContent = said.join(". ");
    }

    function ended() {
      var banner = document.getElementById("login-ended");
      var target = "/login?ended=1&next=" + encodeURIComponent(location.pathname + location.search);
      var p = document.createElement("p");
      p.textContent = "Your login has ended, so this page has stopped updating. ";
      var a = document.createElement("a");
      a.href = target;
      a.textContent = "Log in again";
      p.appendChild(a);
      p.appendChild(document.createTextNode(
        " (taking you there in a few seconds; you come back here after)."));
      banner.replaceChildren(p);
      banner.hidden = false;
      box.classList.add("stale");
      setTimeout(function () { location.assign(target); }, LOGIN_AFTER_MS);
    }
  }

  function waiting(form) {
    form.addEventListener("submit", function (event) {
      var by = event.submitter;
      if (by && by.name) {  // a disabled button's value is not sent: carry it
        var carry = document.createElement("input");
        carry.type = "hidden";
        carry.name = by.name;
        carry.value = by.value;
        form.appendChild(carry);
      }
      document.querySelectorAll("form[data-wait] button").forEach(function (b) {
        b.disabled = true;
      });
      if (by && by.hasAttribute("data-asks")) return;  // the hub asks first: nothing sent yet
      if (by) {
        by.setAttribute("data-label", by.textContent);
        by.textContent = "Waiting for the machine…";
      }
      var status = document.querySelector(".waiting");
      if (status) {
        status.textContent = "Sent. Waiting for the machine's answer (up to 30 seconds)…";
      }
    });
  }

  window.addEventListener("pageshow", function (event) {  // back to a page left waiting
    if (event.persisted) {
      document.querySelectorAll("form[data-wait] button").forEach(function (b) {
        b.disabled = false;
        if (b.hasAttribute("data-label")) b.textContent = b.getAttribute("data-label");
      });
      var status = document.querySelector(".waiting");
      if (status) status.textContent = "";
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var tiles = document.getElementById("tiles");
    if (tiles && tiles.getAttribute("data-refresh")) board(tiles);
    document.querySelectorAll("form[data-wait]").forEach(waiting);
    document.querySelectorAll("[data-print]").forEach(function (b) {
      b.addEventListener("click", function () { window.print(); });
    });
  });
}());
