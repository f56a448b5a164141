// "Refresh to latest" and its live progress. A refresh pushes every device it names; a device
// has answered once it reported after that push (state `responded`). The progress is polled
// every second — the connectivity counts for a refresh of all devices, the selected devices'
// rows for a refresh of a selection — until every pushed device has answered or the
// unreachable window is over.

import * as api from "./api.js";
import { h, replace, notice } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";

const POLL_MS = 1000;

async function unreachableWindowS() {
  const settings = await api.get("/v1/settings").catch(() => null);
  return settings?.unreachable_after_s ?? 300;
}

/** The progress of `answered` of `total` pushed devices, and what the wait is for. */
export function progressView(answered, total, windowEnds, since) {
  const label = t("run.progress", { answered, devices: total });
  const done = answered >= total;
  let end;
  if (done) end = t("run.done");
  else if (Date.now() > windowEnds) end = t("run.window_over");
  else end = t("run.window", { at: formatDateTime(new Date(windowEnds).toISOString()) });
  return h(
    "div",
    { class: "run", "data-state": done ? "finished" : Date.now() > windowEnds ? "window_over" : "running" },
    h("progress", { max: String(Math.max(total, 1)), value: String(Math.min(answered, total)), "aria-label": label }),
    h("p", { class: "run-label" }, label),
    since ? h("p", { class: "run-started" }, t("run.started", { at: formatDateTime(since.at), node: since.node })) : null,
    h("p", { class: "run-end" }, end),
  );
}

/**
 * Polls `count()` (devices answered so far) into `box` under `header`, calling `onTick` after
 * each poll, until `total` answered or `windowEnds` (ms) passed. Returns the stop function.
 */
export function watch(box, { header, total, windowEnds, since, count, onTick }) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      if (onTick) await onTick();
      const answered = await count();
      if (stopped) return;
      replace(box, header, progressView(answered, total, windowEnds, since));
      if (answered >= total || Date.now() > windowEnds) return;
    } catch {
      // A failed poll is retried at the next tick.
    }
    timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** Devices of `topic` (or all) in state `responded`. */
export function respondedCount(topic) {
  return async () => (await api.get(`/v1/connectivity${api.query({ topic })}`)).states.responded ?? 0;
}

/**
 * Starts a refresh (`target`: {all: true, topic?} or {udids}) and shows its progress in `box`.
 * `count` says how many of the pushed devices have answered (default: the connectivity
 * count of responded devices, right for a refresh of all). Returns the stop function.
 */
export async function startRefresh(box, target, { count, onTick } = {}) {
  const answer = await api.post("/v1/refresh", target);
  const skipped = Object.values(answer.skipped || {}).reduce((a, b) => a + b, 0);
  const header = notice("info", t("refresh.sent", { pushing: answer.pushing, skipped }));
  replace(box, header);
  if (!answer.pushing) return () => {};
  const windowEnds = new Date(answer.pushed_at || Date.now()).getTime() + (await unreachableWindowS()) * 1000;
  return watch(box, {
    header,
    total: answer.pushing,
    windowEnds,
    count: count || respondedCount(target.topic),
    onTick,
  });
}

/**
 * The newest refresh run (GET /v1/nodes) shown in `box`: live while its window lasts (for a
 * refresh of every device), else as it ended. Returns the stop function.
 */
export async function showLatest(box, topic, nodes, onTick) {
  const run = (nodes.refreshes || []).find((r) => r.kind === "refresh");
  if (!run) {
    replace(box, h("p", {}, t("dash.refresh.none")));
    return () => {};
  }
  const windowEnds = new Date(run.pushed_at || run.started_at).getTime() + (await unreachableWindowS()) * 1000;
  return watch(box, {
    header: null,
    total: run.devices,
    windowEnds,
    since: { at: run.started_at, node: run.node || run.node_id },
    count: respondedCount(topic),
    onTick,
  });
}
