// test_docs.mjs — the API documentation page (GET /docs, src/api/docs_ui.c) in a real browser:
// Debian's chromium, headless, driven by playwright-core (npm; it never downloads a browser).
//
// It starts `kassa serve` in a temporary directory (as tests/blackbox/conftest.py does: SQLite,
// ports picked by the system, URLs read from the banner), opens /docs, waits for Swagger UI to
// render every operation of kassa's OpenAPI document, and checks that the page shows exactly
// the documented operations (the payments API's, the receipts API's and ATOL's), that
// no request went to another host, and that nothing was logged as an error (console, uncaught
// exceptions, failed or refused requests, Content-Security-Policy violations); then reloads it
// from the browser's cache (a 304 for the page) and checks it renders again.
//
// Usage: node tests/browser/test_docs.mjs [KASSA_BIN]  (default $KASSA_BIN, else build/san/kassa)
// Exits 0 when every check passes, 1 otherwise; it gives up after TEST_TIMEOUT_MS.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CHROMIUM = "/usr/lib/chromium/chromium";
const TEST_TIMEOUT_MS = 150_000;
const START_TIMEOUT_MS = 60_000;
const RENDER_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 60_000;
const SANITIZER_MARKERS = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
  "SUMMARY: UndefinedBehaviorSanitizer"];
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
// Operations the page must show whatever else the document holds.
const PAYMENTS_OPERATIONS = [
  "POST /v2/processing/invoices",
  "GET /v2/processing/invoices/{invoiceID}",
  "POST /v2/processing/invoices/{invoiceID}/payments",
  "POST /v2/processing/invoices/{invoiceID}/payments/{paymentID}/refunds",
  "POST /v2/processing/payment-resources",
  "GET /v2/openapi.json",
];
const RECEIPTS_OPERATIONS = [
  "POST /v1/receipts",
  "GET /v1/receipts",
  "GET /v1/receipts/{receiptID}",
  "GET /v1/receipts/{receiptID}/events",
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let running = null; // the kassa process, for the watchdog

function kassaBin() {
  const path = process.argv[2] || process.env.KASSA_BIN || "build/san/kassa";
  return resolve(ROOT, path);
}

// One `kassa serve` on free ports with its own SQLite store in `dir`.
async function startKassa(dir) {
  const out = join(dir, "stdout.txt");
  const err = join(dir, "stderr.txt");
  const env = { ...process.env };
  env.KASSA_VAULT_MASTER_KEY_FILE ||= join(dir, "vault-master.key");
  const proc = spawn(kassaBin(), ["serve", "--store", "sqlite:" + join(dir, "kassa.db"),
    "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
    "--admin-token-file", join(dir, "var", "admin.token")],
  { cwd: dir, env, stdio: ["ignore", openSync(out, "w"), openSync(err, "w")] });
  const exited = new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal })));
  running = proc;
  const kassa = { proc, exited, err, base: null };
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && !kassa.base) {
    if (proc.exitCode !== null)
      throw new Error("kassa exited while starting:\n" + readFileSync(err, "utf8").slice(-4000));
    const m = /public API\s+(http:\/\/\S+)/.exec(readFileSync(out, "utf8"));
    if (m) kassa.base = m[1];
    else await sleep(50);
  }
  if (!kassa.base) throw new Error("kassa printed no banner in time");
  while (Date.now() < deadline) {
    try {
      if ((await fetch(kassa.base + "/health/ready")).status === 200) return kassa;
    } catch { /* not listening yet */ }
    await sleep(50);
  }
  throw new Error("kassa not ready in time");
}

// SIGTERM, then the checks of conftest.py: a clean exit and no sanitizer report.
async function stopKassa(kassa) {
  const problems = [];
  if (kassa.proc.exitCode === null && kassa.proc.signalCode === null) {
    kassa.proc.kill("SIGTERM");
    const timer = setTimeout(() => kassa.proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
    const { code, signal } = await kassa.exited;
    clearTimeout(timer);
    if (code !== 0) problems.push(`kassa exited with ${code ?? signal}`);
  }
  const text = readFileSync(kassa.err, "utf8");
  for (const marker of SANITIZER_MARKERS) {
    const at = text.indexOf(marker);
    if (at >= 0) {
      problems.push("sanitizer report:\n" + text.slice(Math.max(0, at - 200), at + 4000));
      break;
    }
  }
  return problems;
}

// Whether a line of kassa's JSON log satisfying `pred` appears within a few seconds (the access
// log line is written when a request completes, maybe after the browser has moved on).
async function waitForLog(kassa, pred) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const line of readFileSync(kassa.err, "utf8").split("\n")) {
      try {
        if (pred(JSON.parse(line))) return true;
      } catch { /* not a JSON line */ }
    }
    await sleep(100);
  }
  return false;
}

// "METHOD /template" of every operation in the OpenAPI document kassa serves.
async function documentedOperations(base) {
  const doc = await (await fetch(base + "/v2/openapi.json")).json();
  const ops = [];
  for (const [template, item] of Object.entries(doc.paths))
    for (const method of METHODS)
      if (item[method]) ops.push(method.toUpperCase() + " " + template);
  return ops.sort();
}

async function checkPage(browser, kassa) {
  const base = kassa.base;
  const origin = new URL(base).origin;
  const page = await browser.newPage();
  const requests = [];
  const errors = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push("uncaught: " + e.message));

  const expected = await documentedOperations(base);
  const reply = await page.goto(base + "/docs", { waitUntil: "load" });
  assert.equal(reply.status(), 200);
  // Swagger UI has rendered when every operation of the document has its block.
  await page.waitForFunction((n) => document.querySelectorAll(".opblock").length >= n,
    expected.length, { timeout: RENDER_TIMEOUT_MS });
  const shown = await page.$$eval(".opblock", (blocks) => blocks.map((b) => {
    const method = b.querySelector(".opblock-summary-method")?.textContent.trim();
    const path = b.querySelector(".opblock-summary-path")?.getAttribute("data-path");
    return `${method} ${path}`;
  }));
  assert.deepEqual([...shown].sort(), expected, "the page shows the document's operations");
  for (const op of [...PAYMENTS_OPERATIONS, ...RECEIPTS_OPERATIONS, "POST /atol/v5/getToken"])
    assert.ok(shown.includes(op), `${op} is listed`);
  const title = await page.locator(".info .title").first().textContent();
  assert.match(title, /kassa/);

  const elsewhere = requests.filter((u) => !u.startsWith("data:") && new URL(u).origin !== origin);
  assert.deepEqual(elsewhere, [], "requests to another host");
  for (const path of ["/docs", "/docs/swagger-ui-bundle.js", "/docs/init.js", "/v2/openapi.json"])
    assert.ok(requests.includes(origin + path), `the page loaded ${path}`);
  assert.deepEqual(errors, [], "errors while loading the page");

  // Again from the browser's cache: the page and its script are revalidated (304 on their
  // ETags), Swagger UI's files are fresh for a day. It must render just the same.
  // The browser shows a revalidated reply as its cached 200: kassa's access log tells the truth.
  await page.reload({ waitUntil: "load" });
  await page.waitForFunction((n) => document.querySelectorAll(".opblock").length >= n,
    expected.length, { timeout: RENDER_TIMEOUT_MS });
  assert.deepEqual(errors, [], "errors while reloading the page");
  const revalidated = await waitForLog(kassa, (rec) => rec.msg === "http request" &&
    rec.path === "/docs" && rec.status === 304);
  assert.ok(revalidated, "kassa answered the reload of /docs with 304");
  await page.close();
  return { operations: shown.length, requests: requests.length };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "kassa-browser-"));
  let kassa = null;
  let browser = null;
  const problems = [];
  try {
    kassa = await startKassa(dir);
    browser = await chromium.launch({ executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu"] });
    const got = await checkPage(browser, kassa);
    console.log(`/docs: ${got.operations} operations rendered, ${got.requests} requests, all to kassa`);
  } catch (e) {
    problems.push(e.stack || String(e));
  } finally {
    if (browser) await browser.close().catch((e) => problems.push("closing chromium: " + e));
    if (kassa) problems.push(...await stopKassa(kassa));
    rmSync(dir, { recursive: true, force: true });
  }
  if (problems.length) {
    console.error("FAILED\n" + problems.join("\n"));
    process.exit(1);
  }
  console.log("test_docs.mjs: passed");
}

const watchdog = setTimeout(() => {
  console.error(`test_docs.mjs: no result in ${TEST_TIMEOUT_MS} ms`);
  if (running && running.exitCode === null) running.kill("SIGKILL");
  process.exit(1);
}, TEST_TIMEOUT_MS);
watchdog.unref();
await main();
