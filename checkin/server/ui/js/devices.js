// Devices: a page of the list at a time (server-side paging: limit, cursor, state, q), search
// and filter, refresh all or the selected devices with live progress, CSV of what the filter
// shows.

import * as api from "./api.js";
import { h, replace, field, notice } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";
import { STATES, stateBadge } from "./states.js";
import { startRefresh } from "./refresh.js";

export const PAGE_SIZE = 50;

function hashFor(params) {
  const q = api.query(params);
  return `#/devices${q}`;
}

export async function render(main, ctx) {
  const state = ctx.params.get("state") || "";
  const search = ctx.params.get("q") || "";
  const cursor = ctx.params.get("cursor") || "";
  const selected = new Set();
  let stop = null;

  const searchInput = h("input", { type: "search", name: "q", id: "q", value: search, maxlength: "128" });
  const stateSelect = h(
    "select",
    { name: "state", id: "state" },
    h("option", { value: "" }, t("state.all")),
    STATES.map((s) => h("option", { value: s, selected: s === state }, t(`state.${s}`))),
  );
  const filters = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = hashFor({ q: searchInput.value.trim(), state: stateSelect.value });
      },
    },
    field(t("devices.search"), searchInput),
    field(t("devices.state"), stateSelect),
    h("button", { type: "submit" }, t("devices.apply")),
  );

  const runBox = h("div", { class: "run-box", "aria-live": "polite" });
  const tableBox = h("div", { class: "table-wrap" });
  const pager = h("nav", { class: "pager", "aria-label": "pages" });
  const selectedButton = h("button", { type: "button", id: "refresh-selected", disabled: true }, t("devices.refresh.selected", { n: 0 }));
  const updateSelected = () => {
    selectedButton.disabled = selected.size === 0;
    selectedButton.textContent = t("devices.refresh.selected", { n: selected.size });
  };

  const listQuery = { state, q: search, topic: ctx.topic };
  const load = async () => {
    const page = await api.get(`/v1/devices${api.query({ ...listQuery, limit: PAGE_SIZE, cursor })}`);
    replace(tableBox, table(page.devices, selected, updateSelected));
    replace(
      pager,
      cursor ? h("a", { href: hashFor({ q: search, state }), id: "first-page" }, t("devices.prev")) : null,
      page.next_cursor
        ? h("a", { href: hashFor({ q: search, state, cursor: page.next_cursor }), id: "next-page", rel: "next" }, t("devices.next"))
        : null,
      page.next_cursor && page.devices.length < PAGE_SIZE ? h("p", { class: "help" }, t("devices.short_page")) : null,
    );
  };

  const refresh = async (target) => {
    if (stop) stop();
    try {
      // A selection is answered row by row (its devices are on this page); all, by the counts.
      const selection = target.udids ? new Set(target.udids) : null;
      const count = selection
        ? async () =>
            [...tableBox.querySelectorAll("tr[data-udid]")].filter(
              (tr) => selection.has(tr.dataset.udid) && tr.querySelector('.state[data-state="responded"]'),
            ).length
        : undefined;
      stop = await startRefresh(runBox, target, { count, onTick: () => load().catch(() => {}) });
    } catch (err) {
      replace(runBox, notice("error", t("common.error", { msg: err.message })));
    }
  };
  selectedButton.addEventListener("click", () => refresh({ udids: [...selected] }));

  await load();
  replace(
    main,
    h("h1", {}, t("devices.title")),
    filters,
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        { type: "button", id: "refresh-all", onclick: () => refresh(ctx.topic ? { all: true, topic: ctx.topic } : { all: true }) },
        t("devices.refresh"),
      ),
      selectedButton,
      h("a", { class: "button", id: "csv", href: `/v1/devices.csv${api.query(listQuery)}`, download: "devices.csv" }, t("devices.csv")),
    ),
    runBox,
    tableBox,
    pager,
  );
  return () => stop && stop();
}

function table(devices, selected, onSelect) {
  if (devices.length === 0) return notice("info", t("devices.empty"));
  const boxes = [];
  const all = h("input", {
    type: "checkbox",
    "aria-label": t("devices.select_all"),
    onchange: (e) => {
      for (const b of boxes) {
        b.checked = e.target.checked;
        if (b.checked) selected.add(b.value);
        else selected.delete(b.value);
      }
      onSelect();
    },
  });
  return h(
    "table",
    { class: "devices" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, all),
        ["col.state", "col.name", "col.model", "col.os", "col.serial", "col.collected", "col.enrolled", "col.last_seen"].map((k) =>
          h("th", { scope: "col" }, t(k)),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      devices.map((d) => {
        const box = h("input", {
          type: "checkbox",
          value: d.udid,
          checked: selected.has(d.udid),
          "aria-label": t("devices.select", { udid: d.device_name || d.udid }),
          onchange: (e) => {
            if (e.target.checked) selected.add(d.udid);
            else selected.delete(d.udid);
            onSelect();
          },
        });
        boxes.push(box);
        return h(
          "tr",
          { "data-udid": d.udid },
          h("td", {}, box),
          h("td", {}, stateBadge(d.state)),
          h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(d.udid)}` }, d.device_name || d.udid)),
          h("td", { class: "nowrap" }, [d.model_name, d.product_name].filter(Boolean).join(" ") || "—"),
          h("td", {}, d.os_version || "—"),
          h("td", { class: "mono nowrap" }, d.serial_number || "—"),
          h("td", { class: "nowrap" }, formatDateTime(d.info_collected_at)),
          h("td", { class: "nowrap" }, formatDateTime(d.enrolled_at)),
          h("td", { class: "nowrap" }, formatDateTime(d.last_seen_at)),
        );
      }),
    ),
  );
}
