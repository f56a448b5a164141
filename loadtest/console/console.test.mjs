// The console in a real browser (Debian's headless Chromium, driven by playwright-core),
// against a running server with a small fleet that enrolled through the check-in endpoints
// and answers its pushes (`magicpush-loadtest demo`). Started by
// loadtest/tests/console_browser.rs, which passes:
//   MAGICPUSH_URL, MAGICPUSH_API_KEY   the server and its admin API key
//   CONSOLE_DEVICES                    how many devices enrolled (every one answers pushes),
//                                      spread evenly over two tenants
//   CONSOLE_WRONG_TOPIC_PEM            a certificate + key of another topic (the E320 case)
//   CONSOLE_SCREENSHOTS                where each screen's screenshot is written
//   CHROMIUM                           the browser (default /usr/bin/chromium)
// Each step prints its name; the first failure ends the run with exit code 1.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = need("MAGICPUSH_URL");
const apiKey = need("MAGICPUSH_API_KEY");
const devices = Number(need("CONSOLE_DEVICES"));
const wrongTopicPem = need("CONSOLE_WRONG_TOPIC_PEM");
const shots = need("CONSOLE_SCREENSHOTS");
const PAGE_SIZE = 50;

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

mkdirSync(shots, { recursive: true });
// Playwright starts the browser on a fresh, empty profile of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({
  locale: "en-US",
  timezoneId: "Asia/Tokyo",
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
});
const page = await context.newPage();
// Any script error, CSP violation or failed request the page reports fails the run (the 401s
// and the 409 the steps provoke on purpose are expected).
const problems = [];
const expectedStatuses = new Set([401, 409, 403]);
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() !== "error") return;
  const text = m.text();
  if (/status of (401|403|409)/.test(text)) return;
  problems.push(`console error: ${text}`);
});
page.on("response", (r) => {
  if (r.status() >= 400 && !expectedStatuses.has(r.status())) {
    problems.push(`${r.request().method()} ${r.url()} answered ${r.status()}`);
  }
});

let step = 0;
async function run(name, body) {
  step += 1;
  const started = Date.now();
  process.stdout.write(`${String(step).padStart(2)}. ${name} … `);
  try {
    await body();
    assert.deepEqual(problems, [], "the page reported problems");
    console.log(`ok (${Date.now() - started} ms)`);
  } catch (err) {
    console.log("FAILED");
    await page.screenshot({ path: join(shots, `failed-step-${step}.png`), fullPage: true }).catch(() => {});
    console.error(err);
    await browser.close();
    process.exit(1);
  }
}

// The whole page, or (lists) what the window shows.
const shot = (name, fullPage = true) => page.screenshot({ path: join(shots, `${name}.png`), fullPage });
const rows = () => page.locator("table.devices tbody tr");

await run("the page is served with a strict Content-Security-Policy", async () => {
  const resp = await page.goto(`${base}/ui/`);
  assert.equal(resp.status(), 200);
  const csp = resp.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(await page.locator("html").getAttribute("lang"), "en");
});

await run("a wrong key is refused", async () => {
  await page.getByLabel("Admin API key").fill("not-the-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Wrong API key.").waitFor();
  await shot("signin");
});

await run("sign in and see the dashboard", async () => {
  await page.getByLabel("Admin API key").fill(apiKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "magicpush_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie.includes("magicpush_session")), false);
  // The fleet is there, before any refresh: every device enrolled, none pushed yet.
  await page.locator('[data-count="never_pushed"]').filter({ hasText: String(devices) }).waitFor();
  // Two tenants: a card each, the summary table and the switcher.
  await page.locator(".card.cert").nth(1).waitFor();
  assert.equal(await page.locator("table.tenants tbody tr").count(), 2);
  assert.equal(await page.getByLabel("Tenant").locator("option").count(), 3);
  await shot("dashboard");
});

await run("a state-changing request without the CSRF token is refused", async () => {
  const status = await page.evaluate(async () => {
    const r = await fetch("/v1/settings", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ unreachable_after: "7m" }),
    });
    return r.status;
  });
  assert.equal(status, 403);
});

await run("the device table pages through the fleet", async () => {
  await page.getByRole("link", { name: "Devices", exact: true }).click();
  await page.getByRole("heading", { name: "Devices" }).waitFor();
  await rows().first().waitFor();
  assert.equal(await rows().count(), Math.min(PAGE_SIZE, devices));
  const first = await rows().first().getAttribute("data-udid");
  await shot("devices", false);
  if (devices > PAGE_SIZE) {
    await page.getByRole("link", { name: "Next page" }).click();
    await page.waitForFunction((udid) => !document.querySelector(`tr[data-udid="${udid}"]`), first);
    assert.equal(await rows().count(), devices - PAGE_SIZE);
    assert.equal(await page.getByRole("link", { name: "Next page" }).count(), 0);
    await page.getByRole("link", { name: "First page" }).click();
    await page.locator(`tr[data-udid="${first}"]`).waitFor();
  }
});

await run("filter by state and search", async () => {
  await page.getByLabel("State").selectOption("responded");
  await page.getByRole("button", { name: "Search" }).click();
  await page.getByText("No device matches.").waitFor();
  await page.getByLabel("State").selectOption("never_pushed");
  await page.getByRole("button", { name: "Search" }).click();
  await rows().first().waitFor();
  assert.equal(await rows().count(), Math.min(PAGE_SIZE, devices));
  const serial = (await rows().first().locator("td.mono").textContent()).trim();
  await page.getByLabel("Search (UDID, serial, name)").fill(serial.toLowerCase());
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => document.querySelectorAll("table.devices tbody tr").length === 1);
  await page.getByLabel("Search (UDID, serial, name)").fill("");
  await page.getByLabel("State").selectOption("");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction((n) => document.querySelectorAll("table.devices tbody tr").length === n, Math.min(PAGE_SIZE, devices));
});

await run("Refresh to latest: the states turn to responded", async () => {
  await page.getByRole("button", { name: "Refresh to latest" }).click();
  await page.locator(".run progress").waitFor();
  await page.locator('.run[data-state="finished"]').waitFor({ timeout: 60_000 });
  await page.getByText(`${devices} of ${devices} devices answered`).waitFor();
  // The table is reloaded as answers come: every row of the page says so.
  await page.waitForFunction(
    () => {
      const marks = [...document.querySelectorAll("table.devices tbody tr .state")];
      return marks.length > 0 && marks.every((m) => m.dataset.state === "responded");
    },
    null,
    { timeout: 15_000 },
  );
  assert.match(await rows().first().locator(".state").textContent(), /Updated/);
  await shot("refresh", false);
});

await run("download the CSV of what the filter shows", async () => {
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Download CSV" }).click()]);
  const file = await download.path();
  const lines = readFileSync(file, "utf8").trim().split(/\r?\n/);
  assert.equal(lines[0], "UDID,Device name,Model,OS version,Serial number,Collected at,Enrolled at,State,Last seen");
  assert.equal(lines.length, devices + 1);
  assert.ok(lines.slice(1).every((l) => l.includes(",responded,")), "every device responded");
});

await run("a device's page: identity, results, a command", async () => {
  await rows().first().getByRole("link").click();
  await page.getByRole("heading", { name: "Identity" }).waitFor();
  await page.getByRole("cell", { name: "DeviceInformation" }).first().waitFor();
  await page.getByLabel("Command", { exact: true }).selectOption("EraseDevice");
  await page.getByLabel(/Type the serial number/).fill("WRONG");
  await page.getByRole("button", { name: "Send and push" }).click();
  await page.getByText("The confirmation does not match the serial number.").waitFor();
  await page.getByLabel("Command", { exact: true }).selectOption("DeviceInformation");
  await page.getByRole("button", { name: "Send and push" }).click();
  await page.getByText(/queued and pushed/).waitFor();
  await shot("device");
});

await run("choose a tenant: its devices only", async () => {
  await page.getByRole("link", { name: "Devices", exact: true }).click();
  await rows().first().waitFor();
  const tenant = await page.getByLabel("Tenant").locator("option").nth(1).getAttribute("value");
  await page.getByLabel("Tenant").selectOption(tenant);
  // The demo spreads its devices over the tenants evenly.
  await page.waitForFunction((n) => document.querySelectorAll("table.devices tbody tr").length === n, devices / 2);
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Download CSV" }).click()]);
  assert.equal(readFileSync(await download.path(), "utf8").trim().split(/\r?\n/).length, devices / 2 + 1);
});

await run("issue a certificate request and download it", async () => {
  await page.getByRole("link", { name: "Push certificate" }).click();
  await page.getByRole("heading", { name: "Push certificate", level: 1 }).waitFor();
  await page.locator("#portal-ids [data-field=expiry]").waitFor();
  assert.match(await page.locator("#portal-ids [data-field=expiry]").textContent(), /^[A-Z][a-z]{2} \d{1,2}, \d{4}$/);
  await page.getByLabel("Common name (company)").fill("Example Corp");
  await page.getByLabel("Email").fill("mdm@example.com");
  await page.getByRole("button", { name: "Issue CSR" }).click();
  await page.getByText(/Request PushCertificate_.*\.csr issued/).waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#csr-download").click()]);
  assert.match(download.suggestedFilename(), /^PushCertificate_[A-Z0-9]+_\d{12}\.csr$/);
  assert.match(readFileSync(await download.path(), "utf8"), /^-----BEGIN CERTIFICATE REQUEST-----/);
  await shot("certificate");
});

await run("a certificate of another topic is refused with E320", async () => {
  await page.getByLabel("Certificate file").first().setInputFiles(wrongTopicPem);
  await page.getByRole("button", { name: "Upload and renew" }).click();
  const box = page.locator("#e320");
  await box.waitFor();
  const text = await box.textContent();
  assert.match(text, /E320/);
  assert.match(text, /Registered topic/);
  assert.match(text, /com\.apple\.mgmt\.External\.b7d9e1f3-2a4c-4e6f-8a0b-c2d4e6f8a0b2/);
  assert.match(text, /Renew/);
  await box.scrollIntoViewIfNeeded();
  await shot("e320");
});

await run("enrollment: create an invitation, see it open, withdraw it", async () => {
  // The browser may write to the clipboard (the Copy button); without it the URL is selected.
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await page.getByRole("link", { name: "Enrollment" }).click();
  await page.getByRole("heading", { name: "Enrollment", level: 1 }).waitFor();
  // Two tenants: the form asks which one (the switcher's is chosen).
  const tenant = page.getByLabel("Tenant to enroll into");
  assert.equal(await tenant.locator("option").count(), 2);
  assert.equal(await tenant.inputValue(), await page.getByLabel("Tenant", { exact: true }).inputValue());
  assert.equal(await page.getByLabel("Uses (devices)").inputValue(), "1");
  assert.equal(await page.getByLabel("Valid for").inputValue(), "24h");
  await page.getByLabel("Uses (devices)").fill("3");
  await page.getByLabel("Valid for").selectOption("7d");
  const note = `browser test ${Date.now()}`;
  await page.getByLabel("Note (optional)").fill(note);
  await page.getByRole("button", { name: "Create invitation" }).click();
  await page.getByText("Open this URL on the device (Safari) and install the profile.").waitFor();
  const url = await page.getByLabel("Enrollment URL").inputValue();
  assert.match(url, /^https?:\/\/[^/]+\/enroll\/[0-9a-f]{40}$/);
  assert.equal(new URL(url).origin, new URL(base).origin, "--public-url is the demo's own address");
  const id = url.split("/").pop();
  await page.getByRole("button", { name: "Copy", exact: true }).click();
  await page.getByText(/Copied to the clipboard\.|The URL is selected/).waitFor();
  if (await page.getByText("Copied to the clipboard.").count()) {
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url);
  } else {
    assert.equal(await page.evaluate(() => document.activeElement.value.slice(document.activeElement.selectionStart, document.activeElement.selectionEnd)), url);
  }
  // Listed first (newest first), open, every use left, no device yet.
  const row = page.locator(`table.invitations tbody tr[data-id="${id}"]`);
  await row.waitFor();
  assert.equal(await page.locator("table.invitations tbody tr").first().getAttribute("data-id"), id);
  assert.match(await row.textContent(), new RegExp(note));
  assert.equal(await row.locator(".inv-state").getAttribute("data-state"), "open");
  assert.match(await row.locator(".inv-state").textContent(), /Open/);
  assert.equal((await row.locator('[data-field="uses"]').textContent()).trim(), "3 of 3");
  assert.equal(await row.locator('[data-count="enrolled"]').textContent(), "0");
  // The URL answers a profile (fetched outside the page: it is a device's request).
  const profile = await fetch(url);
  assert.equal(profile.status, 200);
  assert.match(profile.headers.get("content-type"), /application\/x-apple-aspen-config/);
  await shot("enrollment");
  // Withdraw, confirmed first.
  await row.getByRole("button", { name: /^Withdraw/ }).click();
  await row.getByText(/Its URL stops working at once/).waitFor();
  await row.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await row.locator('.inv-state[data-state="open"]').count(), 1);
  await row.getByRole("button", { name: /^Withdraw/ }).click();
  await row.getByRole("button", { name: "Yes, withdraw" }).click();
  await row.locator('.inv-state[data-state="withdrawn"]').waitFor();
  assert.match(await row.locator(".inv-state").textContent(), /Withdrawn/);
  assert.equal(await row.getByRole("button").count(), 0, "no Withdraw for a withdrawn invitation");
  await page.getByText(`Invitation ${note} withdrawn.`).waitFor();
  assert.equal((await fetch(url)).status, 410);
  await shot("enrollment-withdrawn");
});

await run("settings: change the unreachable window", async () => {
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByLabel("Unreachable after").fill("10m");
  await page.getByLabel("On", { exact: true }).check();
  await page.getByLabel("Collection interval").fill("24h");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.getByText("Settings saved and in force.").waitFor();
  const settings = await page.evaluate(async () => (await fetch("/v1/settings")).json());
  assert.equal(settings.unreachable_after_s, 600);
  assert.equal(settings.collect_every_s, 86400);
  await shot("settings");
});

await run("every control is labelled and reachable by keyboard", async () => {
  for (const screen of ["#/", "#/devices", "#/enrollment", "#/certificate", "#/settings"]) {
    await page.goto(`${base}/ui/${screen}`);
    await page.locator("main h1").waitFor();
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll("input, select, textarea")]
        .filter((el) => !el.getAttribute("aria-label") && !(el.id && document.querySelector(`label[for="${el.id}"]`)))
        .map((el) => el.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unlabelled, [], `unlabelled controls on ${screen}`);
  }
  await page.goto(`${base}/ui/#/`);
  await page.locator("main h1").waitFor();
  await page.locator("body").focus();
  const reached = new Set();
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => document.activeElement?.textContent?.trim()));
  }
  for (const name of ["Devices", "Enrollment", "Push certificate", "Settings", "Sign out"]) assert.ok(reached.has(name), `Tab reaches ${name}: ${[...reached]}`);
});

await run("switch to Japanese: the seed's words", async () => {
  await page.goto(`${base}/ui/#/devices`);
  await page.getByRole("button", { name: /日本語/ }).click();
  await page.getByRole("heading", { name: "デバイス一覧" }).waitFor();
  assert.equal(await page.locator("html").getAttribute("lang"), "ja");
  await page.locator("table.devices .state", { hasText: "更新成功" }).first().waitFor();
  await page.getByRole("button", { name: "最新情報に更新" }).waitFor();
  await shot("devices-ja", false);
  await page.getByRole("link", { name: "デバイス登録" }).click();
  await page.getByRole("heading", { name: "デバイス登録", level: 1 }).waitFor();
  await page.getByLabel("有効期間").waitFor();
  await page.locator('table.invitations .inv-state[data-state="withdrawn"]', { hasText: "取り下げ済み" }).first().waitFor();
  await shot("enrollment-ja");
  await page.getByRole("link", { name: "ダッシュボード" }).click();
  await page.getByText("デバイス情報自動収集").waitFor();
  await shot("dashboard-ja");
  await page.getByRole("button", { name: /English/ }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
});

await run("sign out: the cookie is void at once", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("You are signed out.").waitFor();
  const status = await page.evaluate(async () => (await fetch("/v1/connectivity")).status);
  assert.equal(status, 401);
  await page.goto(`${base}/ui/`);
  await page.getByLabel("Admin API key").waitFor();
});

await browser.close();
console.log(`console: ${step} steps passed; screenshots in ${shots}`);
