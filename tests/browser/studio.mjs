// Drive tagface studio in a real Chromium (Debian's /usr/bin/chromium via playwright-core; no browser downloads).
// usage: node studio.mjs URL SCREENSHOT.png
// Prints one JSON line with what it saw; exits non-zero with a message on the first failed check.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node studio.mjs URL SCREENSHOT.png");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "tagface-chromium-"));
const origin = new URL(url).origin;
const problems = [];
const report = { requests: 0 };

function check(ok, message) {
  if (!ok) throw new Error(`check failed: ${message}`);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  viewport: { width: 1440, height: 1000 },
  deviceScaleFactor: 1,
  colorScheme: "dark",
});
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("request", (req) => {
    report.requests++;
    const u = req.url();
    if (!u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:")) problems.push(`non-local request: ${u}`);
  });

  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("body[data-ready=true]");
  check(await page.locator(".swatch[data-kind=hair]").count() === 13, "12 hair swatches + random");
  check(await page.locator(".swatch[data-kind=eyes]").count() === 12, "11 eye swatches + random");

  const faceSrcs = () => page.$$eval("#faces img.face-img", (imgs) => imgs.map((i) => i.src));
  const facesLoaded = (n) => page.waitForFunction((n) => {
    const imgs = [...document.querySelectorAll("#faces img.face-img")];
    return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, n);

  // 1. blue hair, red eyes, 8 faces, seed 1234
  await page.click(".swatch[data-kind=hair][data-colour=blue]");
  await page.click(".swatch[data-kind=eyes][data-colour=red]");
  await page.fill("#seed", "1234");
  const t0 = Date.now();
  await page.click("#generate");
  await facesLoaded(8);
  report.first_faces_ms = Date.now() - t0;
  const first = await faceSrcs();
  check(first.every((s) => s.startsWith("data:image/png;base64,")), "faces are PNG data URLs");
  const size = await page.$eval("#faces img.face-img", (i) => [i.naturalWidth, i.getBoundingClientRect().width]);
  report.face_px = size[0];
  report.face_shown_px = Math.round(size[1]);
  check(size[1] > size[0], "faces are shown upscaled");
  check((await page.textContent("#caption")).includes("seed 1234"), "caption names the seed");
  report.first_notes = await page.textContent("#notes");

  // 2. keep the faces, change the hair colour: same seed, different pixels
  await page.uncheck("#live");
  await page.click(".swatch[data-kind=hair][data-colour=pink]");
  await page.click("#recolour");
  await page.waitForFunction((old) => {
    const imgs = [...document.querySelectorAll("#faces img.face-img")];
    return imgs.length === old.length && imgs.every((i, k) => i.complete && i.naturalWidth > 0 && i.src !== old[k]);
  }, first);
  const second = await faceSrcs();
  check(second.length === 8 && second.every((s, k) => s !== first[k]), "every face changed with the hair colour");
  check(await page.inputValue("#seed") === "1234", "the seed was kept");
  check((await page.textContent("#caption")).startsWith("pink hair"), "caption shows the new hair colour");

  // 3. vary a face, and interpolate between two faces
  await page.hover("#faces .face >> nth=2");
  await page.click('#faces .face >> nth=2 >> [data-act="vary"]');
  await page.waitForFunction(() => document.querySelectorAll("#variations img.face-img").length === 6);
  await page.hover("#faces .face >> nth=0");
  await page.click('#faces .face >> nth=0 >> [data-act="a"]');
  await page.hover("#faces .face >> nth=5");
  await page.click('#faces .face >> nth=5 >> [data-act="b"]');
  await page.waitForFunction(() => (document.querySelector("#gif").src || "").startsWith("data:image/gif"));
  report.strip_frames = await page.locator("#strip img").count();
  check(report.strip_frames === 8, "an 8-frame strip");

  // 3b. strict tags: the page sends it, shows what the redrawing did, and a history entry restores it
  await page.check("#strict");
  await page.click("#generate");
  await page.waitForFunction(() => document.querySelector("#notes").textContent.includes("strict tags"));
  report.strict_notes = await page.textContent("#notes");
  await page.uncheck("#strict");
  await page.click("#history li >> nth=0");
  check(await page.isChecked("#strict"), "the history entry restores strict tags");
  await page.uncheck("#strict");

  // 4. history and a bad seed
  report.history_entries = await page.locator("#history li").count();
  check(report.history_entries >= 3, "history holds the batches drawn");
  await page.fill("#seed", "-5");
  await page.click("#generate");
  await page.waitForSelector("#status.error");
  report.bad_seed_message = await page.textContent("#status");
  await page.fill("#seed", "1234");
  await page.click("#generate");
  await page.waitForFunction(() => !document.querySelector("#status.error"));
  await facesLoaded(8);

  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(400);  // let the faces finish fading in
  await page.screenshot({ path: screenshot, fullPage: true, animations: "disabled" });
  report.screenshot = screenshot;
  check(problems.length === 0, problems.join("; "));
  console.log(JSON.stringify(report));
} catch (err) {
  console.error(err.message + (problems.length ? `\nalso: ${problems.join("; ")}` : ""));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
