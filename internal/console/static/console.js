// The linegate console's one script: while an agent types a reply, LINE
// shows the user a loading animation (at most one request every 20 s).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("reply");
  var text = document.getElementById("reply-text");
  if (!form || !text) return;
  var last = 0;
  text.addEventListener("input", function () {
    var now = Date.now();
    if (now - last < 20000) return;
    last = now;
    var body = new URLSearchParams();
    body.set("csrf", form.elements["csrf"].value);
    fetch(form.dataset.typing, { method: "POST", body: body, credentials: "same-origin" }).catch(function () {});
  });
});
