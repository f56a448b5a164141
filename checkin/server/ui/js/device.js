// One device: its identity, its queue and latest results, and sending a command
// (DeviceInformation, DeviceLock, EraseDevice — the erase confirmed by typing the serial).

import * as api from "./api.js";
import { h, replace, field, notice, facts } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";
import { stateBadge } from "./states.js";

const COMMANDS = ["DeviceInformation", "DeviceLock", "EraseDevice"];

export async function render(main, ctx) {
  const udid = ctx.udid;
  const path = `/v1/devices/${encodeURIComponent(udid)}`;
  const [d, commands] = await Promise.all([api.get(path), api.get(`${path}/commands`)]);
  const commandsBox = h("div", {}, commandTables(commands));
  const reloadCommands = async () => {
    const c = await api.get(`${path}/commands`).catch(() => null);
    if (c) replace(commandsBox, commandTables(c));
  };
  replace(
    main,
    h("p", {}, h("a", { href: "#/devices" }, `← ${t("device.back")}`)),
    h("h1", {}, d.device_name || d.udid, " ", stateBadge(d.state)),
    h(
      "section",
      { class: "card", "aria-labelledby": "device-identity" },
      h("h2", { id: "device-identity" }, t("device.identity")),
      facts([
        [t("field.udid"), h("span", { class: "mono" }, d.udid)],
        [t("col.serial"), d.serial_number],
        [t("col.model"), [d.model_name, d.model].filter(Boolean).join(" ")],
        [t("field.product"), d.product_name],
        [t("col.os"), [d.os_version, d.build_version && `(${d.build_version})`].filter(Boolean).join(" ")],
        [t("field.imei"), d.imei],
        [t("field.phone"), d.phone_number],
        [t("field.topic"), h("span", { class: "mono" }, d.topic || "—")],
        [t("col.enrolled"), formatDateTime(d.enrolled_at)],
        [t("col.collected"), formatDateTime(d.info_collected_at)],
        [t("col.last_seen"), formatDateTime(d.last_seen_at)],
        [t("field.token_updated"), formatDateTime(d.token_updated_at)],
        [t("field.last_push"), formatDateTime(d.last_push_at)],
        [t("field.push_outcome"), d.push_outcome ? d.push_outcome.outcome + (d.push_outcome.reason ? ` (${d.push_outcome.reason})` : "") : "—"],
        [t("field.identity_subject"), d.identity ? d.identity.subject : "—"],
        [t("field.identity_expires"), d.identity ? formatDateTime(d.identity.not_after) : "—"],
        [t("field.invitation"), d.invitation || "—"],
      ]),
    ),
    commandsBox,
    sendForm(d, reloadCommands),
  );
}

function commandTables(c) {
  return [
    h(
      "section",
      { class: "card", "aria-labelledby": "device-queue" },
      h("h2", { id: "device-queue" }, t("device.queue")),
      c.queued.length === 0
        ? h("p", {}, t("device.queue.empty"))
        : h(
            "table",
            {},
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("field.type")), h("th", { scope: "col" }, "UUID"), h("th", { scope: "col" }, t("field.queued_at")))),
            h(
              "tbody",
              {},
              c.queued.map((q) => h("tr", {}, h("td", {}, q.request_type), h("td", { class: "mono" }, q.command_uuid), h("td", {}, formatDateTime(q.queued_at)))),
            ),
          ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "device-results" },
      h("h2", { id: "device-results" }, t("device.results")),
      c.results.length === 0
        ? h("p", {}, t("device.results.empty"))
        : h(
            "table",
            {},
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("field.type")), h("th", { scope: "col" }, t("field.status")), h("th", { scope: "col" }, t("field.at")))),
            h(
              "tbody",
              {},
              c.results
                .slice()
                .reverse()
                .slice(0, 20)
                .map((r) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, r.request_type || "—"),
                    h("td", {}, r.status, r.error_chain?.length ? ` — ${r.error_chain.map((e) => e.LocalizedDescription || e.ErrorCode).join("; ")}` : ""),
                    h("td", {}, formatDateTime(r.at)),
                  ),
                ),
            ),
          ),
    ),
  ];
}

function sendForm(d, after) {
  const status = h("div", { class: "status" });
  const type = h("select", { id: "command-type", name: "request_type" }, COMMANDS.map((c) => h("option", { value: c }, c)));
  const message = h("input", { type: "text", id: "lock-message", maxlength: "200" });
  const phone = h("input", { type: "tel", id: "lock-phone", maxlength: "40" });
  const expected = d.serial_number || d.udid;
  const confirm = h("input", { type: "text", id: "erase-confirm", autocomplete: "off" });
  const lockFields = h("div", { class: "sub" }, field(t("device.lock.message"), message), field(t("device.lock.phone"), phone));
  const eraseFields = h(
    "div",
    { class: "sub" },
    notice("warning", t("device.erase.warning")),
    field(t("device.erase.confirm", { serial: expected }), confirm),
  );
  const showFields = () => {
    lockFields.hidden = type.value !== "DeviceLock";
    eraseFields.hidden = type.value !== "EraseDevice";
  };
  type.addEventListener("change", showFields);
  showFields();
  return h(
    "form",
    {
      class: "card",
      "aria-labelledby": "device-send",
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { udids: [d.udid], request_type: type.value, push: true };
        if (type.value === "DeviceLock") {
          const params = {};
          if (message.value.trim()) params.Message = message.value.trim();
          if (phone.value.trim()) params.PhoneNumber = phone.value.trim();
          if (Object.keys(params).length) body.params = params;
        }
        if (type.value === "EraseDevice" && confirm.value.trim() !== expected) {
          replace(status, notice("error", t("device.confirm_mismatch")));
          confirm.focus();
          return;
        }
        try {
          const answer = await api.post("/v1/commands", body);
          replace(status, notice("info", t("device.sent", { uuid: answer.command_uuid })));
          confirm.value = "";
          await after();
        } catch (err) {
          replace(status, notice("error", t("common.error", { msg: err.message })));
        }
      },
    },
    h("h2", { id: "device-send" }, t("device.send")),
    field(t("device.command"), type),
    lockFields,
    eraseFields,
    h("button", { type: "submit" }, t("device.send.submit")),
    status,
  );
}
