// The console's paging under load: BROWSERS signed-in browsers (one Chromium, a context of
// its own each: its own cookie and session) page through the device list for DURATION_S,
// while the server's resident memory is sampled from /proc. Prints one JSON object.
//   MAGICPUSH_URL, MAGICPUSH_API_KEY   the server and its admin API key
//   SERVER_PID                         the server process (its /proc/PID/status is read)
//   BROWSERS (20), DURATION_S (60)     the load
//   CHROMIUM                           the browser (default /usr/bin/chromium)
// Run by loadtest/console/rss-bench.sh, which starts the server with its fleet.

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const base = need("MAGICPUSH_URL");
const apiKey = need("MAGICPUSH_API_KEY");
const pid = Number(need("SERVER_PID"));
const browsers = Number(process.env.BROWSERS || 20);
const durationS = Number(process.env.DURATION_S || 60);

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

/** The server's resident set, MB. */
function rssMb() {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
  return kb / 1024;
}

const samples = [];
const sampler = setInterval(() => samples.push(rssMb()), 250);
const rssStart = rssMb();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function signedInPage() {
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui/`);
  await page.getByLabel("Admin API key").fill(apiKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.goto(`${base}/ui/#/devices`);
  await page.locator("table.devices tbody tr").first().waitFor();
  return page;
}

// Sign in one at a time (the sign-in limiter counts failures only, but 20 logins at once on
// two cores would time the browsers' start, not the server).
const pages = [];
let rssOne = null;
for (let i = 0; i < browsers; i++) {
  pages.push(await signedInPage());
  // One browser has seen the dashboard (which counts the fleet) and a page of devices.
  if (i === 0) rssOne = rssMb();
}
// Warm: every browser has loaded a page; the server's memory from here is what paging adds.
await new Promise((r) => setTimeout(r, 1000));
const rssWarm = rssMb();
const warmIndex = samples.length;

const pageMs = [];
let wrapped = 0;
const deadline = Date.now() + durationS * 1000;
async function pageThrough(page) {
  while (Date.now() < deadline) {
    const next = page.locator("#next-page");
    const first = await page.locator("table.devices tbody tr").first().getAttribute("data-udid");
    const started = Date.now();
    if ((await next.count()) === 0) {
      wrapped += 1;
      await page.goto(`${base}/ui/#/devices?wrap=${wrapped}`);
    } else {
      await next.click();
    }
    await page.waitForFunction(
      (udid) => {
        const row = document.querySelector("table.devices tbody tr");
        return row && row.dataset.udid !== udid;
      },
      first,
      { timeout: 30_000 },
    );
    pageMs.push(Date.now() - started);
  }
}
await Promise.all(pages.map(pageThrough));
clearInterval(sampler);
const rssEnd = rssMb();
await browser.close();

const during = samples.slice(warmIndex);
const peak = Math.max(rssWarm, ...during);
pageMs.sort((a, b) => a - b);
const pct = (p) => pageMs[Math.min(pageMs.length - 1, Math.floor((p / 100) * pageMs.length))];
const round1 = (x) => Math.round(x * 10) / 10;
console.log(
  JSON.stringify({
    browsers,
    duration_s: durationS,
    pages: pageMs.length,
    pages_per_s: round1(pageMs.length / durationS),
    page_ms: { p50: pct(50), p99: pct(99), max: pageMs[pageMs.length - 1] },
    server_rss_mb: {
      start: round1(rssStart),
      one_browser: round1(rssOne),
      warm: round1(rssWarm),
      peak: round1(peak),
      end: round1(rssEnd),
      growth_while_paging: round1(peak - rssWarm),
      growth_from_one_browser: round1(peak - rssOne),
    },
  }),
);
