// Dashboard: per tenant the certificate card and the devices by state, the last refresh with
// its progress, the scheduled collection, the nodes; with several tenants a summary table.

import * as api from "./api.js";
import { h, replace, notice } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";
import { stateCounts, STATES, stateBadge } from "./states.js";
import { certCard, certState, daysLeft } from "./cert.js";
import { showLatest, startRefresh } from "./refresh.js";

export async function render(main, ctx) {
  const q = api.query({ topic: ctx.topic });
  const [connectivity, settings, nodes] = await Promise.all([
    api.get(`/v1/connectivity${q}`),
    api.get("/v1/settings"),
    api.get("/v1/nodes"),
  ]);
  const shown = ctx.topic ? ctx.tenants.filter((x) => x.topic === ctx.topic) : ctx.tenants;
  const runBox = h("div", { class: "run-box", "aria-live": "polite" });
  const countsBox = h("div", {}, stateCounts(connectivity.states));
  let stop = null;
  const reloadCounts = async () => {
    const c = await api.get(`/v1/connectivity${q}`).catch(() => null);
    if (c) replace(countsBox, stateCounts(c.states));
  };

  const refreshButton = h(
    "button",
    {
      type: "button",
      id: "refresh-all",
      onclick: async () => {
        if (stop) stop();
        try {
          stop = await startRefresh(runBox, ctx.topic ? { all: true, topic: ctx.topic } : { all: true }, { onTick: reloadCounts });
        } catch (err) {
          replace(runBox, notice("error", t("common.error", { msg: err.message })));
        }
      },
    },
    t("devices.refresh"),
  );

  stop = await showLatest(runBox, ctx.topic, nodes, reloadCounts);

  replace(
    main,
    h("h1", {}, t("dash.title")),
    ctx.tenants.length > 1 && !ctx.topic ? summary(ctx.tenants) : null,
    h("div", { class: "cards" }, shown.map(certCard)),
    ctx.tenants.length === 0 ? notice("info", t("cert.none")) : null,
    h(
      "section",
      { class: "card", "aria-labelledby": "dash-devices" },
      h("h2", { id: "dash-devices" }, t("dash.devices"), " ", h("span", { class: "total" }, `(${t("dash.total")} ${connectivity.total})`)),
      countsBox,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "dash-refresh" },
      h("h2", { id: "dash-refresh" }, t("dash.refresh.last")),
      runBox,
      refreshButton,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "dash-schedule" },
      h("h2", { id: "dash-schedule" }, t("dash.schedule")),
      h(
        "p",
        { id: "schedule-status" },
        settings.collect_every ? t("dash.schedule.on", { every: settings.collect_every }) : t("dash.schedule.off"),
      ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "dash-nodes" },
      h("h2", { id: "dash-nodes" }, t("dash.nodes")),
      h(
        "ul",
        {},
        (nodes.nodes || []).map((n) =>
          h("li", {}, `${n.alive ? "●" : "○"} ${n.name} ${n.version} — ${formatDateTime(n.last_heartbeat_at)}`),
        ),
      ),
    ),
  );
  return () => stop && stop();
}

function summary(tenants) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "dash-tenants" },
    h("h2", { id: "dash-tenants" }, t("dash.tenants")),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "tenants" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, t("card.name")),
            h("th", { scope: "col" }, t("field.status")),
            h("th", { scope: "col" }, t("card.expires")),
            h("th", { scope: "col" }, t("dash.total")),
            STATES.slice(0, 4).map((s) => h("th", { scope: "col" }, stateBadge(s))),
          ),
        ),
        h(
          "tbody",
          {},
          tenants.map((x) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, x.name || x.topic),
              h("td", {}, certState(x.certificate)),
              h("td", {}, daysLeft(x.certificate)),
              h("td", {}, String(x.devices?.total ?? 0)),
              STATES.slice(0, 4).map((s) => h("td", {}, String(x.devices?.states?.[s] ?? 0))),
            ),
          ),
        ),
      ),
    ),
  );
}
