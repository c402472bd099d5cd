// Browser check of the built course site, offline, in headless Chromium driven by playwright-core.
//
//   node tests/site_check.js spec.json
//
// spec.json (written by tests/test_site.py): {base, chromium, screenshots, pages: [{out, title, images, prev, next,
// word}]}. `base` serves the site (http://127.0.0.1:<port>/). For every page it asserts:
// no console error, no page error, no failed request, no request outside `base`; every <img> loaded, and at least
// `images` pictures shown in outputs; the previous/next links go to `prev`/`next`; every link into the site reaches a
// page, and its #anchor exists there. On the landing page, typing each page's `word` into the search box lists that
// page. Screenshots: index.png and 04_lora.png (desktop) and
// *-phone.png. Prints one line per page; exits 1 with the list of failures.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const failures = [];
const fail = (where, what) => failures.push(`${where}: ${what}`);
const docs = new Map();   // url without #: Promise of {status, text}

function watch(page, where) {
  page.on('console', (m) => { if (m.type() === 'error') fail(where, `console error: ${m.text()}`); });
  page.on('pageerror', (e) => fail(where, `page error: ${e.message}`));
  page.on('requestfailed', (r) => fail(where, `request failed: ${r.url()} (${r.failure() && r.failure().errorText})`));
  page.on('response', (r) => { if (r.status() >= 400) fail(where, `HTTP ${r.status()} for ${r.url()}`); });
}

async function fetchDoc(context, url) {
  if (!docs.has(url)) {
    docs.set(url, context.request.get(url).then(async (r) => ({ status: r.status(), text: await r.text() })));
  }
  return docs.get(url);
}

async function loadAllImages(page) {
  await page.evaluate(() => document.querySelectorAll('img[loading="lazy"]').forEach((i) => { i.loading = 'eager'; }));
  await page.waitForFunction(() => Array.from(document.images).every((i) => i.complete), null, { timeout: 60000 });
  return page.evaluate(() => ({
    broken: Array.from(document.images).filter((i) => i.naturalWidth === 0).map((i) => i.src),
    shown: Array.from(document.querySelectorAll('.out.img img'))
      .filter((i) => i.naturalWidth > 0 && i.getBoundingClientRect().width > 0).length,
  }));
}

async function checkPager(page, p) {
  const got = await page.evaluate(() => ({
    prev: (document.querySelector('a[rel="prev"]') || {}).href || null,
    next: (document.querySelector('a[rel="next"]') || {}).href || null,
  }));
  for (const rel of ['prev', 'next']) {
    const want = p[rel] ? spec.base + p[rel] : null;
    if (got[rel] !== want) fail(p.out, `${rel} link is ${got[rel]}, expected ${want}`);
  }
}

async function checkLinks(context, page, p) {
  const hrefs = await page.evaluate(() => Array.from(document.querySelectorAll('a[href]'), (a) => a.href));
  const internal = [...new Set(hrefs.filter((h) => h.startsWith(spec.base)))];
  for (const href of internal) {
    const [url, frag] = href.split('#');
    const doc = await fetchDoc(context, url);
    if (doc.status !== 200) { fail(p.out, `link ${href}: HTTP ${doc.status}`); continue; }
    if (frag && !doc.text.includes(`id="${decodeURIComponent(frag)}"`)) fail(p.out, `link ${href}: no #${frag} there`);
  }
  return internal.length;
}

async function checkSearch(page) {
  for (const p of spec.pages.filter((q) => q.word)) {
    await page.fill('#search', '');
    await page.fill('#search', p.word);
    const want = spec.base + p.out;
    try {
      await page.waitForFunction((w) => Array.from(document.querySelectorAll('#search-results a'))
        .some((a) => a.href.split('#')[0] === w), want, { timeout: 15000 });
    } catch (e) { fail('search', `typing "${p.word}" does not list ${p.out}`); }
  }
  await page.fill('#search', '');
}

async function checkPage(context, p) {
  const page = await context.newPage();
  watch(page, p.out);
  await page.goto(spec.base + p.out, { waitUntil: 'load' });
  const imgs = await loadAllImages(page);
  for (const src of imgs.broken) fail(p.out, `picture did not load: ${src}`);
  if (imgs.shown < p.images) fail(p.out, `${imgs.shown} output pictures shown, the notebook has ${p.images}`);
  await checkPager(page, p);
  const links = await checkLinks(context, page, p);
  if (p.out === 'index.html') await checkSearch(page);
  const shot = { 'index.html': 'index', '04_lora.html': '04_lora' }[p.out];
  if (shot) await page.screenshot({ path: path.join(spec.screenshots, `${shot}.png`) });
  await page.close();
  console.log(`${p.out}: ${imgs.shown}/${p.images} pictures, ${links} internal links`);
}

async function phoneShots(browser) {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
  await phone.route('**/*', (route) => (route.request().url().startsWith(spec.base) ? route.continue() : route.abort()));
  for (const [out, name] of [['index.html', 'index-phone'], ['04_lora.html', '04_lora-phone']]) {
    if (!spec.pages.some((p) => p.out === out)) continue;
    const page = await phone.newPage();
    watch(page, `${out} (phone)`);
    await page.goto(spec.base + out, { waitUntil: 'load' });
    await page.screenshot({ path: path.join(spec.screenshots, `${name}.png`) });
    await page.close();
  }
  await phone.close();
}

async function main() {
  fs.mkdirSync(spec.screenshots, { recursive: true });
  const browser = await chromium.launch({ executablePath: spec.chromium, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.route('**/*', (route) => {   // offline: anything outside the site is refused, and counted
    const url = route.request().url();
    if (url.startsWith(spec.base) || url.startsWith('data:')) return route.continue();
    fail('network', `request outside the site: ${url}`);
    return route.abort();
  });
  for (const p of spec.pages) await checkPage(context, p);
  await phoneShots(browser);
  await browser.close();
  if (failures.length) {
    console.log(`\n${failures.length} failures:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`all ${spec.pages.length} pages pass`);
}

setTimeout(() => { console.error('site check: no result after 10 minutes'); process.exit(3); }, 600000).unref();
main().catch((e) => { console.error(e); process.exit(2); });
