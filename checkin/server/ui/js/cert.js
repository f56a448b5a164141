// A push certificate's card: topic, Subject DN, expiry with days left, its state by word and
// mark, amber inside the warning window and red near or past expiry or when APNs refuses it.

import { h } from "./dom.js";
import { t, formatDate } from "./i18n.js";

const MARKS = { valid: "✔", expiring: "⚠", expired: "✖", rejected: "✖" };

/** "ok", "warn" (amber) or "bad" (red). */
export function severity(cert) {
  if (!cert) return "bad";
  if (cert.state === "expired" || cert.state === "rejected") return "bad";
  if (cert.state === "expiring") return cert.days_left <= 7 ? "bad" : "warn";
  return "ok";
}

export function certState(cert) {
  const state = cert ? cert.state : "missing";
  return h(
    "span",
    { class: `cert-state sev-${severity(cert)}`, "data-cert-state": state },
    h("span", { class: "mark", "aria-hidden": "true" }, MARKS[state] || "?"),
    " ",
    t(`cert.state.${state}`),
  );
}

export function daysLeft(cert) {
  if (!cert) return "—";
  return cert.days_left < 0 ? t("card.expired_ago") : t("card.days_left", { n: cert.days_left });
}

/** The card of one tenant from GET /v1/topics. */
export function certCard(tenant) {
  const c = tenant.certificate;
  return h(
    "section",
    { class: `card cert sev-${severity(c)}`, "aria-label": tenant.name || tenant.topic },
    h("h3", {}, tenant.name || tenant.topic),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, t("card.topic")),
      h("dd", { class: "mono" }, tenant.topic),
      h("dt", {}, t("card.subject")),
      h("dd", { class: "mono" }, c ? c.subject : "—"),
      h("dt", {}, t("card.expires")),
      h("dd", {}, c ? formatDate(c.not_after) : "—", " (", daysLeft(c), ")"),
      h("dt", {}, t("field.status")),
      h("dd", {}, certState(c)),
      h("dt", {}, t("card.apple_id")),
      h("dd", {}, tenant.apple_id || "—"),
    ),
  );
}
