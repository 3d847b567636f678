// The job page's live output: the job's Server-Sent Events (/api/jobs/ID/events/, as
// `check_task --follow` reads them), each host's new lines shown as they come, prefixed by
// its IP and elapsed time, as the CLI prints them. A host stored in an end state refreshes
// the state block at once (htmx) instead of at the next 2 s poll; once every host has ended
// the stream is closed. Text only (textContent): a host's output is never markup here.
(function () {
  "use strict";
  const box = document.getElementById("job-stream-box");
  if (!box || !window.EventSource || !window.TextEncoder) return;
  const pre = document.getElementById("job-stream");
  const said = document.getElementById("job-stream-state");
  // A browser tab is not a log store: past this many lines the oldest go (Rundeck's 20,000
  // nodes crashed browsers); the whole output is in each host's result.
  const MAX_LINES = 2000;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const hosts = {}; // task id: {ip, elapsed, seen: {stdout, stderr}, partial: {stdout, stderr}}
  let source = null;
  let refreshing = null;

  function host(event) {
    let h = hosts[event.task];
    if (!h) {
      h = { ip: event.host || "?", elapsed: 0, seen: { stdout: 0, stderr: 0 },
            partial: { stdout: "", stderr: "" } };
      hosts[event.task] = h;
    }
    return h;
  }

  function line(h, stream, text, marker) {
    const row = document.createElement("span");
    row.className = "live-line " + stream + (marker ? " marker" : "");
    row.textContent = h.ip + " " + h.elapsed.toFixed(1).padStart(5) + "s | " + text + "\n";
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(row);
    while (pre.childElementCount > MAX_LINES) pre.removeChild(pre.firstElementChild);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    box.hidden = false;
  }

  // As cmdb.jobs.render.Follow._add: bytes from offset `at`; what was shown is not shown
  // again (a replay after a reconnect), a gap is said.
  function add(h, stream, at, text) {
    let bytes = encoder.encode(text);
    const seen = h.seen[stream];
    if (at > seen) {
      if (h.partial[stream]) line(h, stream, h.partial[stream]);
      h.partial[stream] = "";
      line(h, stream, "[... " + (at - seen).toLocaleString() + " bytes not shown ...]", true);
    } else if (at < seen) {
      bytes = bytes.subarray(Math.min(seen - at, bytes.length));
    }
    if (!bytes.length) return;
    h.seen[stream] = Math.max(at, seen) + bytes.length;
    const lines = (h.partial[stream] + decoder.decode(bytes)).split("\n");
    h.partial[stream] = lines.pop();
    lines.forEach(function (l) { line(h, stream, l); });
  }

  function refresh() {
    if (refreshing || !window.htmx) return;
    refreshing = setTimeout(function () {
      refreshing = null;
      htmx.ajax("GET", window.location.href, { target: "#job-live", select: "#job-live",
                                               swap: "outerHTML" });
    }, 300);
  }

  function ended() {
    const summary = document.getElementById("job-summary");
    return summary && summary.dataset.done === "true";
  }

  function close(why) {
    if (source) source.close();
    source = null;
    Object.keys(hosts).forEach(function (task) {
      const h = hosts[task];
      ["stdout", "stderr"].forEach(function (s) {
        if (h.partial[s]) line(h, s, h.partial[s]);
        h.partial[s] = "";
      });
    });
    said.textContent = why;
  }

  source = new EventSource(box.dataset.events);
  said.textContent = "(streaming)";
  source.addEventListener("output", function (e) {
    const event = JSON.parse(e.data);
    const h = host(event);
    h.elapsed = Number(event.elapsed) || h.elapsed;
    ["stdout", "stderr"].forEach(function (s) {
      if (event[s]) add(h, s, Number(event[s + "_at"]) || 0, event[s]);
    });
  });
  source.addEventListener("truncated", function (e) {
    const event = JSON.parse(e.data);
    line({ ip: "", elapsed: 0 }, "stdout", "[live output stopped: the job's hosts sent over " +
         Number(event.budget || 0).toLocaleString() + " bytes; each host's result still " +
         "shows how it ended]", true);
  });
  source.addEventListener("task", refresh);
  source.addEventListener("error", function () {
    // A refused stream (429: the user's streams are all taken) is not retried by the
    // browser; the 2 s refresh of the state block goes on without it.
    if (source && source.readyState === EventSource.CLOSED) {
      close("(live output unavailable: the page refreshes every few seconds)");
    }
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (source && ended()) close("(every host has ended)");
  });
})();
