// The console's frame: sign-in, the header (navigation, tenant switcher, language switch,
// sign-out) and the screens, one per hash route (#/, #/devices, #/devices/UDID,
// #/enrollment, #/certificate, #/settings).

import * as api from "./api.js";
import { h, replace, field, notice } from "./dom.js";
import { t, setLang, currentLang } from "./i18n.js";
import * as dashboard from "./dashboard.js";
import * as devices from "./devices.js";
import * as device from "./device.js";
import * as enrollment from "./enrollment.js";
import * as certificate from "./certificate.js";
import * as settings from "./settings.js";

const root = document.getElementById("app");
const TENANT_KEY = "magicpush.tenant";
let cleanup = null;
let tenants = [];

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { screen: dashboard, name: "dashboard", params };
  if (parts[0] === "devices" && parts.length === 2)
    return { screen: device, name: "devices", params, udid: parts[1] };
  if (parts[0] === "devices") return { screen: devices, name: "devices", params };
  if (parts[0] === "enrollment") return { screen: enrollment, name: "enrollment", params };
  if (parts[0] === "certificate") return { screen: certificate, name: "certificate", params };
  if (parts[0] === "settings") return { screen: settings, name: "settings", params };
  return { screen: dashboard, name: "dashboard", params };
}

function selectedTenant() {
  const stored = sessionStorage.getItem(TENANT_KEY) || "";
  return tenants.some((x) => x.topic === stored) ? stored : "";
}

async function loadTenants() {
  try {
    tenants = (await api.get("/v1/topics")).topics || [];
  } catch (err) {
    if (err.status === 401) throw err;
    tenants = [];
  }
}

function header(current) {
  const link = (name, href, label) =>
    h("a", { href, "aria-current": current === name ? "page" : false }, label);
  const switcher =
    tenants.length > 1
      ? field(
          t("tenant.label"),
          h(
            "select",
            {
              id: "tenant",
              onchange: (e) => {
                sessionStorage.setItem(TENANT_KEY, e.target.value);
                show();
              },
            },
            h("option", { value: "" }, t("tenant.all")),
            tenants.map((x) =>
              h(
                "option",
                { value: x.topic, selected: x.topic === selectedTenant() },
                x.name || x.topic,
              ),
            ),
          ),
        )
      : null;
  return h(
    "header",
    { class: "top" },
    h("a", { class: "skip", href: "#main" , onclick: (e) => { e.preventDefault(); document.getElementById("main").focus(); } }, t("nav.skip")),
    h("span", { class: "brand" }, t("app.title")),
    h(
      "nav",
      { "aria-label": t("nav.main") },
      link("dashboard", "#/", t("nav.dashboard")),
      link("devices", "#/devices", t("nav.devices")),
      link("enrollment", "#/enrollment", t("nav.enrollment")),
      link("certificate", "#/certificate", t("nav.certificate")),
      link("settings", "#/settings", t("nav.settings")),
    ),
    h(
      "div",
      { class: "tools" },
      switcher,
      h(
        "button",
        {
          type: "button",
          id: "lang",
          lang: currentLang() === "ja" ? "en" : "ja",
          "aria-label": `${t("nav.lang.label")}: ${t("nav.lang")}`,
          onclick: () => {
            setLang(currentLang() === "ja" ? "en" : "ja");
            show();
          },
        },
        t("nav.lang"),
      ),
      h("button", { type: "button", id: "signout", onclick: signOut }, t("nav.signout")),
    ),
  );
}

async function show() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  document.title = t("app.title");
  const r = route();
  const main = h("main", { id: "main", tabindex: "-1" }, h("p", {}, t("common.loading")));
  replace(root, header(r.name), main);
  const ctx = {
    topic: selectedTenant(),
    tenants,
    params: r.params,
    udid: r.udid,
    reloadTenants: async () => {
      await loadTenants();
    },
  };
  try {
    cleanup = (await r.screen.render(main, ctx)) || null;
  } catch (err) {
    if (err.status !== 401) replace(main, notice("error", t("common.error", { msg: err.message })));
  }
}

function signInScreen(message) {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  document.title = `${t("signin.title")} — ${t("app.title")}`;
  const key = h("input", {
    type: "password",
    name: "api_key",
    id: "api-key",
    autocomplete: "current-password",
    required: true,
  });
  const status = h("div", { class: "status" }, message ? notice("info", message) : null);
  const form = h(
    "form",
    {
      class: "signin",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const s = await api.post("/v1/session", { api_key: key.value });
          api.setCsrf(s.csrf_token);
          key.value = "";
          await start();
        } catch (err) {
          const text =
            err.status === 429
              ? t("signin.limited", { s: err.headers?.get("Retry-After") || "60" })
              : err.status === 401
                ? t("signin.wrong")
                : t("common.error", { msg: err.message });
          replace(status, notice("error", text));
          key.focus();
        }
      },
    },
    h("h1", {}, t("signin.title")),
    field(t("signin.key"), key, t("signin.help")),
    h("button", { type: "submit" }, t("signin.submit")),
    status,
  );
  const lang = h(
    "button",
    {
      type: "button",
      id: "lang",
      onclick: () => {
        setLang(currentLang() === "ja" ? "en" : "ja");
        signInScreen(message);
      },
    },
    t("nav.lang"),
  );
  replace(
    root,
    h("header", { class: "top" }, h("span", { class: "brand" }, t("app.title")), h("div", { class: "tools" }, lang)),
    h("main", { id: "main", tabindex: "-1" }, form),
  );
  key.focus();
}

async function signOut() {
  try {
    await api.del("/v1/session");
  } catch {
    // Signed out either way: the cookie is gone or was already void.
  }
  api.setCsrf(null);
  signInScreen(t("signin.out"));
}

async function start() {
  try {
    const s = await api.get("/v1/session");
    api.setCsrf(s.csrf_token);
  } catch (err) {
    signInScreen(err.status === 401 ? null : t("common.error", { msg: err.message }));
    return;
  }
  await loadTenants();
  await show();
}

api.whenSignedOut(() => signInScreen(t("signin.expired")));
window.addEventListener("hashchange", () => {
  if (root.querySelector("nav")) show();
});
setLang(currentLang());
start();
