// "Refresh to latest" and its live progress: the refresh run's counts from GET /v1/nodes,
// polled every second until every device has answered or the unreachable window is over.

import * as api from "./api.js";
import { h, replace, notice } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";

const POLL_MS = 1000;

/** The run `id` from GET /v1/nodes (the newest runs are listed), or null. */
export async function findRun(id) {
  const nodes = await api.get("/v1/nodes");
  return (nodes.refreshes || []).find((r) => r.id === id) || null;
}

/** The newest refresh run (of kind `refresh`), or null. */
export async function latestRun() {
  const nodes = await api.get("/v1/nodes");
  return (nodes.refreshes || []).find((r) => r.kind === "refresh") || null;
}

/** A run's progress: a <progress> with its label, the state and times. */
export function runView(run, windowEnds) {
  const label = t("run.progress", { answered: run.answered, devices: run.devices });
  let end = null;
  if (run.state === "finished" || run.answered >= run.devices) end = t("run.done");
  else if (windowEnds && Date.now() > windowEnds) end = t("run.window_over");
  else if (windowEnds) end = t("run.window", { at: formatDateTime(new Date(windowEnds).toISOString()) });
  return h(
    "div",
    { class: "run", "data-run": run.id, "data-state": run.state },
    h("progress", { max: String(Math.max(run.devices, 1)), value: String(run.answered), "aria-label": label }),
    h("p", { class: "run-label" }, label, " · ", t(`run.state.${run.state}`)),
    h("p", { class: "run-started" }, t("run.started", { at: formatDateTime(run.started_at), node: run.node || run.node_id })),
    end ? h("p", { class: "run-end" }, end) : null,
  );
}

/**
 * Starts a refresh (`target`: {all: true, topic?} or {udids}) and shows its progress in `box`,
 * calling `onTick` after each poll (to reload the table). Returns a function that stops polling.
 */
export async function startRefresh(box, target, onTick) {
  const answer = await api.post("/v1/refresh", target);
  const skipped = Object.values(answer.skipped || {}).reduce((a, b) => a + b, 0);
  const sent = notice("info", t("refresh.sent", { pushing: answer.pushing, skipped }));
  replace(box, sent);
  if (!answer.run_id) return () => {};
  return watchRun(box, answer.run_id, sent, onTick);
}

/** Polls run `id` into `box` until it ends or the window is over. */
export async function watchRun(box, id, header, onTick) {
  let stopped = false;
  let timer = null;
  const settings = await api.get("/v1/settings").catch(() => null);
  const windowS = settings?.unreachable_after_s ?? 300;
  const tick = async () => {
    if (stopped) return;
    let run = null;
    try {
      run = await findRun(id);
    } catch {
      // A failed poll is retried at the next tick.
    }
    if (stopped) return;
    if (run) {
      const windowEnds = new Date(run.pushed_at || run.started_at).getTime() + windowS * 1000;
      replace(box, header, runView(run, windowEnds));
      if (onTick) await onTick(run);
      const over = run.state !== "running" || run.answered >= run.devices || Date.now() > windowEnds;
      if (over) return;
    }
    timer = setTimeout(tick, POLL_MS);
  };
  await tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
