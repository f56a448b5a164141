// Settings: scheduled collection on/off and its interval, the unreachable window — read and
// changed through GET|PUT /v1/settings, checked by the server as it checks its start flags.

import * as api from "./api.js";
import { h, replace, field, notice } from "./dom.js";
import { t } from "./i18n.js";

function source(s) {
  return t("settings.source", { source: t(`settings.source.${s}`) });
}

export async function render(main) {
  const s = await api.get("/v1/settings");
  const status = h("div", { class: "status", "aria-live": "polite" });
  const on = h("input", { type: "radio", name: "collect", id: "collect-on", value: "on", checked: !!s.collect_every });
  const off = h("input", { type: "radio", name: "collect", id: "collect-off", value: "off", checked: !s.collect_every });
  const every = h("input", { type: "text", id: "collect-every", value: s.collect_every || "24h", size: "8" });
  const unreachable = h("input", { type: "text", id: "unreachable-after", value: s.unreachable_after, size: "8", required: true });
  const sync = () => {
    every.disabled = off.checked;
  };
  on.addEventListener("change", sync);
  off.addEventListener("change", sync);
  sync();
  replace(
    main,
    h("h1", {}, t("settings.title")),
    h(
      "form",
      {
        class: "card",
        id: "settings-form",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const saved = await api.put("/v1/settings", {
              collect_every: on.checked ? every.value.trim() : "off",
              unreachable_after: unreachable.value.trim(),
            });
            await render(main);
            const box = main.querySelector(".status");
            if (box) replace(box, notice("info", t("settings.saved")));
            return saved;
          } catch (err) {
            replace(status, notice("error", t("common.error", { msg: err.message })));
          }
        },
      },
      h(
        "fieldset",
        {},
        h("legend", {}, t("settings.collect")),
        h("div", { class: "radio" }, on, h("label", { for: "collect-on" }, t("settings.collect.on"))),
        h("div", { class: "radio" }, off, h("label", { for: "collect-off" }, t("settings.collect.off"))),
        field(t("settings.every"), every, t("settings.every.help")),
        h("p", { class: "help" }, source(s.source.collect_every)),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, t("settings.unreachable")),
        field(t("settings.unreachable"), unreachable, t("settings.unreachable.help")),
        h("p", { class: "help" }, source(s.source.unreachable_after)),
      ),
      h("button", { type: "submit", id: "settings-save" }, t("settings.save")),
      status,
    ),
  );
}
