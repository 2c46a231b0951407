// The console's one script, served by killswitch itself (CSP `script-src 'self'`). Pages work
// without it: it only reloads a page that shows something still running (an element with
// `data-refresh-secs`), until the page shows it ended; without scripts that page offers a link.
"use strict";
const running = document.querySelector("[data-refresh-secs]");
if (running) {
  const secs = Math.max(1, Number(running.dataset.refreshSecs) || 2);
  setTimeout(() => window.location.reload(), secs * 1000);
}
