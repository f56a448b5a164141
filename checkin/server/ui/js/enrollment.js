// Enrollment: invitations (POST|GET /v1/enrollments, DELETE /v1/enrollments/{id}). An
// invitation is a URL that a device opens in Safari to install the enrollment profile; it
// admits as many devices as its uses, until it expires or is withdrawn. The screen creates
// one (its URL shown with a Copy button), lists them newest first with the devices that
// enrolled through each, and withdraws an open one after a confirmation. A server started
// without --public-url hands out none: its 409 is shown instead of the form.

import * as api from "./api.js";
import { h, replace, field, notice } from "./dom.js";
import { t, formatDateTime } from "./i18n.js";

/** The lifetimes offered (`expires_in`); the second is the default. */
const LIFETIMES = ["1h", "24h", "7d", "30d"];
const DEFAULT_LIFETIME = "24h";

/** Every state an invitation can be in, each with a mark (never told by colour alone). */
const MARKS = { open: "●", used_up: "✔", expired: "⌛", withdrawn: "✖" };

export function invitationState(state) {
  return h(
    "span",
    { class: `inv-state inv-state-${state}`, "data-state": state },
    h("span", { class: "mark", "aria-hidden": "true" }, MARKS[state] || "?"),
    " ",
    MARKS[state] ? t(`enroll.state.${state}`) : state,
  );
}

function tenantName(tenants, topic) {
  if (!topic) return "—";
  const x = tenants.find((x) => x.topic === topic);
  return x?.name || h("span", { class: "mono" }, topic);
}

export async function render(main, ctx) {
  let list;
  try {
    list = (await api.get("/v1/enrollments")).enrollments || [];
  } catch (err) {
    if (err.status !== 409) throw err;
    // No --public-url (or no built-in device CA): the server's words name what to change.
    replace(
      main,
      h("h1", {}, t("enroll.title")),
      h(
        "section",
        { class: "notice warning enroll-off", role: "status", id: "enroll-off" },
        h("h2", {}, t("enroll.off")),
        h("p", {}, err.message),
      ),
    );
    return;
  }
  const listStatus = h("div", { class: "status", "aria-live": "polite" });
  const listBox = h("div", { class: "table-wrap" });
  const show = (invitations) => replace(listBox, table(invitations, ctx, withdraw));
  const reload = async () => {
    show(((await api.get("/v1/enrollments")).enrollments || []).filter(mine));
  };
  // The header's tenant switcher narrows the list as it narrows the other screens.
  const mine = (inv) => !ctx.topic || inv.topic === ctx.topic;
  async function withdraw(inv) {
    try {
      await api.del(`/v1/enrollments/${encodeURIComponent(inv.id)}`);
      await reload();
      replace(listStatus, notice("info", t("enroll.withdrawn", { note: label(inv) })));
      // Its buttons are gone with its row's old cells: the focus goes back to the list.
      main.querySelector("#enroll-list")?.focus();
    } catch (err) {
      replace(listStatus, notice("error", t("common.error", { msg: err.message })));
    }
  }
  show(list.filter(mine));
  const chosen = ctx.tenants.find((x) => x.topic === ctx.topic);
  replace(
    main,
    h("h1", {}, t("enroll.title")),
    h("p", { class: "help" }, t("enroll.intro")),
    createSection(ctx, reload),
    h(
      "section",
      { class: "card", "aria-labelledby": "enroll-list" },
      h("h2", { id: "enroll-list", tabindex: "-1" }, t("enroll.list")),
      chosen ? h("p", { class: "help" }, t("enroll.list.tenant", { tenant: chosen.name || chosen.topic })) : null,
      listStatus,
      listBox,
    ),
  );
}

/** How an invitation is named to a screen reader: its note, else the start of its id. */
function label(inv) {
  return inv.note || `${inv.id.slice(0, 8)}…`;
}

function createSection(ctx, reload) {
  const several = ctx.tenants.length > 1;
  const tenant = several
    ? h(
        "select",
        { id: "enroll-tenant", name: "topic", required: true },
        ctx.tenants.map((x) => h("option", { value: x.topic, selected: x.topic === ctx.topic }, x.name || x.topic)),
      )
    : null;
  const uses = h("input", { type: "number", id: "enroll-uses", name: "uses", min: "1", max: "100000", step: "1", value: "1", required: true });
  const lifetime = h(
    "select",
    { id: "enroll-expires", name: "expires_in" },
    LIFETIMES.map((l) => h("option", { value: l, selected: l === DEFAULT_LIFETIME }, t(`enroll.expires.${l}`))),
  );
  const note = h("input", { type: "text", id: "enroll-note", name: "note", maxlength: "200", autocomplete: "off" });
  const status = h("div", { class: "status", "aria-live": "polite" });
  const result = h("div", { id: "enroll-result" });
  return h(
    "section",
    { class: "card", "aria-labelledby": "enroll-create" },
    h("h2", { id: "enroll-create" }, t("enroll.create")),
    h(
      "form",
      {
        id: "enroll-form",
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { uses: Number(uses.value), expires_in: lifetime.value };
          if (tenant) body.topic = tenant.value;
          if (note.value.trim()) body.note = note.value.trim();
          replace(status);
          try {
            const inv = await api.post("/v1/enrollments", body);
            replace(result, created(inv, ctx.tenants));
            note.value = "";
            await reload().catch(() => {});
            result.querySelector("input")?.focus();
          } catch (err) {
            replace(status, notice("error", t("common.error", { msg: err.message })));
          }
        },
      },
      tenant ? field(t("enroll.tenant"), tenant) : null,
      field(t("enroll.uses"), uses, t("enroll.uses.help")),
      field(t("enroll.expires"), lifetime),
      field(t("enroll.note"), note, t("enroll.note.help")),
      h("button", { type: "submit", id: "enroll-submit" }, t("enroll.submit")),
      status,
    ),
    result,
  );
}

/** The new invitation: its URL, prominent, with a Copy button and what to do with it. */
function created(inv, tenants) {
  const url = h("input", { type: "text", id: "enroll-url", class: "url mono", readonly: true, value: inv.url, spellcheck: "false" });
  const copied = h("div", { class: "status", "aria-live": "polite" });
  const select = () => {
    url.focus();
    url.select();
  };
  const copy = async () => {
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(inv.url);
      replace(copied, notice("info", t("enroll.copied")));
    } catch {
      // No clipboard here (plain http elsewhere than localhost, or refused): the text is
      // selected for the reader's own copy.
      select();
      replace(copied, notice("info", t("enroll.copy.manual")));
    }
  };
  return h(
    "div",
    { class: "notice info invitation", role: "region", "aria-labelledby": "enroll-created" },
    h("h3", { id: "enroll-created" }, t("enroll.created")),
    h("p", { class: "instruction" }, t("enroll.instruction")),
    h(
      "div",
      { class: "url-row" },
      field(t("enroll.url"), url),
      h("button", { type: "button", id: "enroll-copy", onclick: copy }, t("enroll.copy")),
    ),
    h(
      "p",
      { class: "help" },
      t("enroll.created.facts", {
        tenant: tenants.find((x) => x.topic === inv.topic)?.name || inv.topic || "—",
        uses: inv.uses,
        at: formatDateTime(inv.expires_at),
      }),
    ),
    copied,
  );
}

function table(invitations, ctx, withdraw) {
  if (invitations.length === 0) return h("p", { id: "enroll-empty" }, t("enroll.empty"));
  return h(
    "table",
    { class: "invitations" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["enroll.col.note", "tenant.label", "col.state", "enroll.col.uses", "enroll.col.devices", "enroll.col.created", "enroll.col.expires", "enroll.col.action"].map((k) =>
          h("th", { scope: "col" }, t(k)),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      invitations.map((inv) =>
        h(
          "tr",
          { "data-id": inv.id },
          h("td", {}, inv.note || "—"),
          h("td", {}, tenantName(ctx.tenants, inv.topic)),
          h(
            "td",
            {},
            invitationState(inv.state),
            inv.withdrawn_at ? h("div", { class: "help" }, formatDateTime(inv.withdrawn_at)) : null,
          ),
          h("td", { class: "nowrap", "data-field": "uses" }, t("enroll.uses.left", { left: inv.uses_left, uses: inv.uses })),
          h(
            "td",
            { "data-field": "devices" },
            h("strong", { "data-count": "enrolled" }, String(inv.enrolled)),
            inv.devices?.length
              ? h(
                  "ul",
                  { class: "udids" },
                  inv.devices.map((d) =>
                    h(
                      "li",
                      {},
                      h("a", { class: "mono", href: `#/devices/${encodeURIComponent(d.udid)}`, title: formatDateTime(d.enrolled_at) }, d.udid),
                    ),
                  ),
                )
              : null,
          ),
          h("td", { class: "nowrap" }, formatDateTime(inv.created_at)),
          h("td", { class: "nowrap" }, formatDateTime(inv.expires_at)),
          h("td", {}, inv.state === "open" ? withdrawControl(inv, withdraw) : null),
        ),
      ),
    ),
  );
}

/** "Withdraw", then "Withdraw it?" with the confirming and the cancelling button. */
function withdrawControl(inv, withdraw) {
  const box = h("div", { class: "withdraw" });
  const ask = () => {
    const yes = h(
      "button",
      { type: "button", class: "danger", onclick: () => withdraw(inv) },
      t("enroll.withdraw.confirm"),
    );
    replace(
      box,
      h(
        "div",
        { role: "group", "aria-label": t("enroll.withdraw.question", { note: label(inv) }) },
        h("p", {}, t("enroll.withdraw.question", { note: label(inv) })),
        yes,
        " ",
        h("button", { type: "button", class: "secondary", onclick: () => idle().focus() }, t("enroll.withdraw.cancel")),
      ),
    );
    yes.focus();
  };
  const idle = () => {
    const button = h(
      "button",
      { type: "button", class: "secondary", "aria-label": `${t("enroll.withdraw")}: ${label(inv)}`, onclick: ask },
      t("enroll.withdraw"),
    );
    replace(box, button);
    return button;
  };
  idle();
  return box;
}
