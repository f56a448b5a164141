// The push certificate, as the carrier's manual walks it: issue a request (CSR) and download
// it, upload Apple's .pem (matched to its pending request), the E320 refusal of a certificate
// with another topic, the fields to find it by in Apple's portal, the Apple ID memo, history,
// and adding a tenant.

import * as api from "./api.js";
import { h, replace, field, notice, facts } from "./dom.js";
import { t, formatDateTime, formatPortalDate, formatDate } from "./i18n.js";
import { certState, daysLeft } from "./cert.js";

/** The tenant this screen works on: the switcher's, or the only one. */
function tenantOf(ctx) {
  if (ctx.topic) return ctx.topic;
  return ctx.tenants.length === 1 ? ctx.tenants[0].topic : "";
}

export async function render(main, ctx) {
  const topic = tenantOf(ctx);
  const q = api.query({ topic });
  const [details, requests, history] = await Promise.all([
    topic ? api.get(`/v1/pushcert${q}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))) : null,
    api.get("/v1/pushcert/requests"),
    api.get(`/v1/pushcert/history${q}`),
  ]);
  const rerender = async () => {
    await ctx.reloadTenants();
    await render(main, { ...ctx, tenants: (await api.get("/v1/topics")).topics || [] });
  };
  replace(
    main,
    h("h1", {}, t("cert.title")),
    details ? current(details, topic, rerender) : notice("info", t("cert.none")),
    requestSection(requests, rerender),
    uploadSection(topic, ctx.tenants.length, rerender),
    addTenantSection(rerender),
    historySection(history),
  );
}

function current(c, topic, rerender) {
  const memoInput = h("input", { type: "text", id: "apple-id", value: c.apple_id || "", maxlength: "256", autocomplete: "off" });
  const nameInput = h("input", { type: "text", id: "tenant-name", value: c.name || "", maxlength: "256" });
  const memoStatus = h("div", { class: "status" });
  const nameStatus = h("div", { class: "status" });
  return h(
    "section",
    { class: "card", "aria-labelledby": "cert-current" },
    h("h2", { id: "cert-current" }, t("cert.current"), " ", certState(c)),
    facts([
      [t("card.topic"), h("span", { class: "mono" }, c.topic)],
      [t("card.subject"), h("span", { class: "mono" }, c.subject)],
      [t("cert.issuer"), c.issuer],
      [t("card.expires"), `${formatDate(c.not_after)} (${daysLeft(c)})`],
      [t("cert.environment"), c.environment],
    ]),
    c.warnings?.length
      ? h("div", {}, h("h3", {}, t("cert.warnings")), h("ul", { class: "warnings" }, c.warnings.map((w) => h("li", {}, w))))
      : null,
    h("h3", {}, t("cert.ids")),
    h("p", { class: "help" }, t("cert.ids.help")),
    h(
      "table",
      { class: "portal-ids", id: "portal-ids" },
      h("tbody", {},
        h("tr", {}, h("th", { scope: "row" }, t("cert.apsp")), h("td", { class: "mono", "data-field": "apsp" }, c.apsp ? `APSP:${c.apsp}` : "—")),
        h("tr", {}, h("th", { scope: "row" }, t("cert.serial")), h("td", { class: "mono", "data-field": "serial" }, c.serial)),
        h("tr", {}, h("th", { scope: "row" }, t("cert.expiry_portal")), h("td", { "data-field": "expiry" }, formatPortalDate(c.not_after))),
      ),
    ),
    h(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api.put(`/v1/pushcert/memo${api.query({ topic })}`, { apple_id: memoInput.value.trim() });
            replace(memoStatus, notice("info", t("cert.memo.saved")));
          } catch (err) {
            replace(memoStatus, notice("error", t("common.error", { msg: err.message })));
          }
        },
      },
      field(t("cert.memo"), memoInput, t("cert.memo.help")),
      h("button", { type: "submit" }, t("cert.memo.save")),
      memoStatus,
    ),
    h(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api.put(`/v1/topics/${encodeURIComponent(topic)}`, { name: nameInput.value.trim() });
            await rerender();
          } catch (err) {
            replace(nameStatus, notice("error", t("common.error", { msg: err.message })));
          }
        },
      },
      field(t("cert.name"), nameInput),
      h("button", { type: "submit" }, t("cert.name.save")),
      nameStatus,
    ),
  );
}

function requestSection(requests, rerender) {
  const cn = h("input", { type: "text", id: "csr-cn", maxlength: "64" });
  const email = h("input", { type: "email", id: "csr-email", maxlength: "128" });
  const country = h("input", { type: "text", id: "csr-country", maxlength: "2", size: "2" });
  const status = h("div", { class: "status", "aria-live": "polite" });
  const latest = requests[requests.length - 1];
  return h(
    "section",
    { class: "card", "aria-labelledby": "cert-request" },
    h("h2", { id: "cert-request" }, t("cert.request")),
    h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          const body = {};
          if (cn.value.trim()) body.common_name = cn.value.trim();
          if (email.value.trim()) body.email = email.value.trim();
          if (country.value.trim()) body.country = country.value.trim().toUpperCase();
          try {
            const issued = await api.post("/v1/pushcert/csr", body);
            await rerender();
            const box = document.getElementById("csr-status");
            if (box) replace(box, notice("info", t("cert.request.issued", { file: issued.file_name })));
          } catch (err) {
            replace(status, notice("error", t("common.error", { msg: err.message })));
          }
        },
      },
      field(t("cert.request.cn"), cn),
      field(t("cert.request.email"), email),
      field(t("cert.request.country"), country),
      h("button", { type: "submit", id: "issue-csr" }, t("cert.request.submit")),
    ),
    h("div", { id: "csr-status" }, status),
    h("h3", {}, t("cert.pending")),
    requests.length === 0
      ? h("p", {}, t("cert.pending.none"))
      : h(
          "ul",
          { class: "requests" },
          requests.map((r) =>
            h(
              "li",
              {},
              h("span", { class: "mono" }, r.file_name),
              ` — ${formatDateTime(r.created_at)} `,
              h(
                "button",
                {
                  type: "button",
                  class: "secondary",
                  "aria-label": `${t("cert.withdraw")} ${r.file_name}`,
                  onclick: async () => {
                    await api.del(`/v1/pushcert/csr/${encodeURIComponent(r.id)}`);
                    await rerender();
                  },
                },
                t("cert.withdraw"),
              ),
            ),
          ),
        ),
    latest
      ? h("p", {}, h("a", { class: "button", id: "csr-download", href: "/v1/pushcert/csr", download: latest.file_name }, t("cert.request.download", { file: latest.file_name })))
      : null,
  );
}

function e320Box(err) {
  // The answer names both topics as keys of their own (`registered_topic`, `new_topic`).
  const topics = { registered: err.body?.registered_topic || "?", uploaded: err.body?.new_topic || "?" };
  return h(
    "div",
    { class: "notice error e320", role: "alert", id: "e320" },
    h("h3", {}, t("e320.title")),
    facts([
      [t("e320.registered"), h("span", { class: "mono" }, topics.registered)],
      [t("e320.new"), h("span", { class: "mono" }, topics.uploaded)],
    ]),
    h("p", {}, t("e320.what")),
    h("details", {}, h("summary", {}, "E320"), h("pre", {}, err.message)),
  );
}

function fileUpload(id, label, help, submit, send) {
  const input = h("input", { type: "file", id, accept: ".pem,.cer,.crt,.der,application/x-pem-file" });
  const status = h("div", { class: "status", "aria-live": "polite" });
  return h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const file = input.files && input.files[0];
        if (!file) {
          input.focus();
          return;
        }
        try {
          replace(status, notice("info", await send(file)));
        } catch (err) {
          replace(status, err.status === 409 && err.body?.code === "E320" ? e320Box(err) : notice("error", t("common.error", { msg: err.message })));
        }
      },
    },
    field(label, input, help),
    h("button", { type: "submit", id: `${id}-submit` }, submit),
    status,
  );
}

function uploadSection(topic, tenantCount, rerender) {
  if (!topic && tenantCount > 1) return null;
  return h(
    "section",
    { class: "card", "aria-labelledby": "cert-upload" },
    h("h2", { id: "cert-upload" }, t("cert.upload")),
    fileUpload("cert-file", t("cert.upload.file"), t("cert.upload.help"), t("cert.upload.submit"), async (file) => {
      const c = await api.put(`/v1/pushcert${api.query({ topic })}`, file, { "Content-Type": "application/x-pem-file" });
      setTimeout(rerender, 1500);
      return t("cert.upload.done", { date: formatDate(c.not_after) });
    }),
  );
}

function addTenantSection(rerender) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "cert-add" },
    h("h2", { id: "cert-add" }, t("cert.add")),
    fileUpload("tenant-file", t("cert.upload.file"), t("cert.add.help"), t("cert.add.submit"), async (file) => {
      const c = await api.post("/v1/topics", file);
      setTimeout(rerender, 1500);
      return t("cert.add.done", { topic: c.topic });
    }),
  );
}

function historySection(history) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "cert-history" },
    h("h2", { id: "cert-history" }, t("cert.history")),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            [t("cert.serial"), t("card.topic"), t("card.expires"), t("cert.history.registered"), t("cert.history.replaced"), t("card.apple_id")].map((x) =>
              h("th", { scope: "col" }, x),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          history.map((r) =>
            h(
              "tr",
              {},
              h("td", { class: "mono" }, r.serial),
              h("td", { class: "mono" }, r.topic),
              h("td", {}, formatPortalDate(r.not_after)),
              h("td", {}, formatDateTime(r.registered_at)),
              h("td", {}, formatDateTime(r.replaced_at)),
              h("td", {}, r.apple_id || "—"),
            ),
          ),
        ),
      ),
    ),
  );
}
