// The analyst console in a real browser: Debian's Chromium driven by playwright-core, axe-core
// on every page the browser lands on, and (when asked) screenshots for docs/screenshots.
//
//   KILLSWITCH_E2E_CONFIG=config.json node tests/console/e2e.mjs
//
// tests/it/console_browser.rs seeds a killswitch on the fake Entra and an OpenID provider,
// writes the configuration and runs this script (`cargo test --test it console_browser --
// --ignored`, or .ci/console-e2e, which also installs what this needs). The configuration:
//
//   base_url         killswitch, e.g. http://127.0.0.1:PORT
//   code_url         optional: GET ?analyst=EMAIL answers a fresh one-time code (see below)
//   entra_url        optional: GET ?customer=SLUG&account=UPN answers {"enabled": bool}, the
//                    fake Entra's word on an account (checked after every change)
//   analysts         by part in the story: responder (analyst, contoso and fabrikam), lead,
//                    auditor, admin, outsider (analyst, fabrikam only): {email, role, token,
//                    totp_hex}; sso: {email, login} (the provider's development login name)
//   customers        [{slug, ready, connection}], connection being the exact text the home
//                    page shows ("Ready" or "Not ready: <the connection test's reason>")
//   accounts         {customer, target, protected}: the account disabled and enabled again,
//                    and one the customer's policy protects
//   detections       {approve: {id, account}, dismiss: {id, account}}: pending, of `customer`
//   totp_check       {totp_hex, unix, code}: a code killswitch computed, to check ours against
//   screenshot_dir   optional: where <page>-<1280|390>-<dark|light>.png go
//   download_dir     where the audit export is saved
//   results          where this script writes what it did, for the harness to check:
//                    {"passed": [step letters], "export": file or null, "actions": {...}}
//
// One-time codes. killswitch accepts each 30-second step once per analyst, within one step
// either side. So that the run does not wait 30 seconds per action, the harness serves
// `code_url`: each call moves the clock of the killswitch under test (its ManualClock, which
// the authenticator's TOTP check reads) one step forward and answers the code of the new step.
// Without `code_url` (a killswitch on the real clock) the codes are computed here (RFC 6238,
// HMAC-SHA1, 6 digits, 30 s), each analyst taking the current step and then the next, and
// waiting for the clock when both are used.
//
// Steps: E2E_ONLY=a,c,e runs only those, E2E_SKIP=i,j all but those (for pages that do not
// exist yet). A failed step ends the run unless E2E_KEEP_GOING=1. axe-core violations of
// impact serious or critical (at 1280 and 390 px, light and dark) fail the run at the end,
// all of them listed.

import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SCRIPT = require.resolve('axe-core/axe.min.js');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const STEP_SECS = 30;
const SCHEMES = ['light', 'dark'];
const WIDTHS = [1280, 390];

const configFile = process.env.KILLSWITCH_E2E_CONFIG;
if (!configFile) {
  console.error('KILLSWITCH_E2E_CONFIG names the configuration file (see the header of e2e.mjs)');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configFile, 'utf8'));
const base = new URL(config.base_url);
const who = config.analysts;
const target = config.accounts.target;
const customer = config.accounts.customer;

class StepFailure extends Error {}

function check(condition, message) {
  if (!condition) throw new StepFailure(message);
}

// ---- One-time codes ----------------------------------------------------------------------

function totp(secretHex, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', Buffer.from(secretHex, 'hex')).update(counter).digest();
  const at = mac[mac.length - 1] & 0xf;
  const number = ((mac[at] & 0x7f) << 24) | (mac[at + 1] << 16) | (mac[at + 2] << 8) | mac[at + 3];
  return String(number % 1_000_000).padStart(6, '0');
}

const usedStep = new Map();
const lastCode = new Map();

// A code killswitch has not seen from this analyst.
async function freshCode(part) {
  const analyst = who[part];
  let code;
  if (config.code_url) {
    const url = new URL(config.code_url);
    url.searchParams.set('analyst', analyst.email);
    const answer = await fetch(url);
    check(answer.ok, `the harness gave no code for ${analyst.email}: ${answer.status}`);
    code = (await answer.text()).trim();
  } else {
    const now = () => Math.floor(Date.now() / 1000 / STEP_SECS);
    const step = Math.max(now(), (usedStep.get(part) ?? 0) + 1);
    while (step > now() + 1) await new Promise((resolve) => setTimeout(resolve, 1000));
    usedStep.set(part, step);
    code = totp(analyst.totp_hex, step);
  }
  lastCode.set(part, code);
  return code;
}

// ---- The fake Entra's word ---------------------------------------------------------------

async function entraSays(account, enabled) {
  if (!config.entra_url) return;
  const url = new URL(config.entra_url);
  url.searchParams.set('customer', customer);
  url.searchParams.set('account', account);
  const answer = await fetch(url);
  check(answer.ok, `the harness cannot read ${account} in the fake Entra: ${answer.status}`);
  const user = await answer.json();
  check(
    user.enabled === enabled,
    `the fake Entra says ${account} is ${user.enabled ? 'enabled' : 'disabled'}, expected ${enabled ? 'enabled' : 'disabled'}`,
  );
  console.log(`   the fake Entra agrees: ${account} is ${enabled ? 'enabled' : 'disabled'}`);
}

// ---- The browser, axe-core and screenshots -----------------------------------------------

let browser;
const contexts = [];
const violations = [];
const shot = new Set();

async function newPage() {
  const context = await browser.newContext({
    // The pages forbid every script; axe-core is injected regardless.
    bypassCSP: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    colorScheme: 'light',
  });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.setDefaultNavigationTimeout(20_000);
  return page;
}

function pathOf(page) {
  return decodeURIComponent(new URL(page.url()).pathname);
}

// A short account of where the browser is, for a failure message.
async function whereAmI(page) {
  const text = await page
    .locator('body')
    .innerText()
    .catch(() => '');
  return `at ${page.url()}: ${text.replace(/\s+/g, ' ').slice(0, 400)}`;
}

async function runAxe(page) {
  const loaded = await page.evaluate(() => typeof window.axe === 'object');
  if (!loaded) await page.addScriptTag({ path: AXE_SCRIPT });
  return page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target.join(' '), html: n.html })),
    }));
  });
}

// `work(page)`, again on the new document if the page reloaded itself meanwhile (a running
// action's page refreshes every two seconds).
async function settled(page, work) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work(page);
    } catch (e) {
      if (attempt === 3 || !/context was destroyed|navigat/i.test(String(e))) throw e;
      await page.waitForLoadState('load');
    }
  }
}

// axe-core at both widths, in both colour schemes: a phone's layout and the dark theme have
// their own ways to fail (a table that scrolls, a colour without contrast).
async function axe(page, name) {
  const type = (await page.evaluate(() => document.contentType).catch(() => '')) ?? '';
  if (!type.includes('html')) return;
  const viewport = page.viewportSize();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: viewport.height });
    for (const scheme of SCHEMES) {
      await page.emulateMedia({ colorScheme: scheme });
      const found = await settled(page, runAxe);
      for (const v of found.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
        const key = [name, v.id, ...v.nodes.map((n) => n.target)].join(' ');
        const view = `${width} px ${scheme}`;
        const known = violations.find((seen) => seen.key === key);
        if (known) {
          if (!known.views.includes(view)) known.views.push(view);
          continue;
        }
        violations.push({ key, page: name, url: pathOf(page), views: [view], ...v });
        console.log(`   axe: ${v.impact} ${v.id} on ${name} (${view}): ${v.help}`);
      }
    }
  }
  await page.setViewportSize(viewport);
  await page.emulateMedia({ colorScheme: 'light' });
}

async function screenshots(page, name) {
  if (!config.screenshot_dir || shot.has(name)) return;
  shot.add(name);
  mkdirSync(config.screenshot_dir, { recursive: true });
  const viewport = page.viewportSize();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 800 });
    for (const scheme of ['dark', 'light']) {
      await page.emulateMedia({ colorScheme: scheme });
      const path = join(config.screenshot_dir, `${name}-${width}-${scheme}.png`);
      await settled(page, (p) => p.screenshot({ path, fullPage: true }));
    }
  }
  await page.setViewportSize(viewport);
  await page.emulateMedia({ colorScheme: 'light' });
}

// Every page the browser lands on passes through here: axe-core, then screenshots under `name`
// unless `shoot` is false.
async function look(page, name, { shoot = true } = {}) {
  await axe(page, name);
  if (shoot) await screenshots(page, name);
}

async function visit(page, path, name, options) {
  const response = await page.goto(new URL(path, base).href);
  await look(page, name, options);
  return response;
}

// Clicks `button` and waits for the page it leads to; its response.
async function submit(page, button) {
  const [response] = await Promise.all([page.waitForNavigation(), button.click()]);
  return response;
}

function accountPath(slug, account) {
  return `/customers/${slug}/accounts/${encodeURIComponent(account)}`;
}

// ---- Sessions ----------------------------------------------------------------------------

const sessions = new Map();

async function signInWithToken(page, part) {
  const analyst = who[part];
  await visit(page, '/login', 'login');
  const form = page.locator('form[action="/login"]');
  check(
    (await form.locator('input[type=hidden][name=csrf_token]').count()) === 1,
    'the sign-in form carries no hidden csrf_token',
  );
  await form.locator('input[name=token]').fill(analyst.token);
  await form.locator('input[name=code]').fill(await freshCode(part));
  await submit(page, form.getByRole('button', { name: 'Sign in', exact: true }));
  check(pathOf(page) === '/', `signing in as ${analyst.email} did not land on / but ${await whereAmI(page)}`);
  const body = await page.locator('body').innerText();
  check(body.includes(analyst.email), `/ does not say who is signed in (${analyst.email}): ${await whereAmI(page)}`);
}

// A page signed in as `part` with an API token and a code; one session per analyst.
async function signedIn(part) {
  if (!sessions.has(part)) {
    const page = await newPage();
    await signInWithToken(page, part);
    sessions.set(part, page);
  }
  return sessions.get(part);
}

// ---- Steps -------------------------------------------------------------------------------

const done = { actions: {}, export: null };

async function signInWithApiTokenAndCode() {
  const page = await newPage();
  await signInWithToken(page, 'responder');
  await look(page, 'home');
  sessions.set('responder', page);
}

async function signInWithSingleSignOn() {
  const page = await newPage();
  await visit(page, '/login', 'login');
  const link = page.getByRole('link', { name: 'Sign in with single sign-on' });
  check((await link.count()) === 1, `/login has no link "Sign in with single sign-on": ${await whereAmI(page)}`);
  check((await link.getAttribute('href')) === '/login/sso', 'the single sign-on link does not lead to /login/sso');
  await Promise.all([page.waitForNavigation(), link.click()]);
  // The provider's development login, then its consent page (not killswitch's pages: no axe).
  for (let pages = 0; new URL(page.url()).origin !== base.origin; pages += 1) {
    check(pages < 4, `the OpenID provider kept asking: ${await whereAmI(page)}`);
    const login = page.locator('input[name=login]');
    if ((await login.count()) > 0) {
      await login.fill(who.sso.login);
      await page.locator('input[name=password]').fill('any');
    }
    await submit(page, page.locator('button[type=submit]').first());
  }
  check(pathOf(page) === '/', `single sign-on did not land on / but ${await whereAmI(page)}`);
  const body = await page.locator('body').innerText();
  check(body.includes(who.sso.email), `/ does not say ${who.sso.email} is signed in: ${await whereAmI(page)}`);
  await look(page, 'home-sso', { shoot: false });
}

async function homeShowsEachCustomersLight() {
  const page = await signedIn('responder');
  await visit(page, '/', 'home');
  for (const c of config.customers) {
    const card = page.locator('li.card').filter({ has: page.locator('code', { hasText: c.slug }) });
    check((await card.count()) === 1, `/ has no card (li.card) for ${c.slug}: ${await whereAmI(page)}`);
    const light = card.locator('p.light');
    check((await light.count()) === 1, `the card of ${c.slug} has no p.light`);
    const classes = ((await light.getAttribute('class')) ?? '').split(/\s+/);
    const want = c.ready ? 'ready' : 'not-ready';
    check(classes.includes(want), `the light of ${c.slug} has classes "${classes.join(' ')}", not ${want}`);
    const lines = (await card.locator('p').allInnerTexts()).map((t) => t.trim());
    check(
      lines.includes(c.connection),
      `the card of ${c.slug} does not say "${c.connection}"; it says: ${lines.join(' | ')}`,
    );
    console.log(`   ${c.slug}: ${want}, "${c.connection}"`);
  }
}

async function findTheAccount() {
  const page = await signedIn('responder');
  const response = await visit(page, `/customers/${customer}`, 'customer');
  check(response.status() === 200, `/customers/${customer} answered ${response.status()}: ${await whereAmI(page)}`);
  const form = page.locator('form:has(input[name=account])');
  check((await form.count()) === 1, `/customers/${customer} has no form with a field "account": ${await whereAmI(page)}`);
  check(((await form.getAttribute('method')) ?? 'get').toLowerCase() === 'get', 'the "Find an account" form is not GET');
  check((await page.getByText('Find an account').count()) > 0, `/customers/${customer} does not say "Find an account"`);
  await form.locator('input[name=account]').fill(target);
  await submit(page, form.locator('button[type=submit], button:not([type]), input[type=submit]').first());
  check(
    pathOf(page) === `/customers/${customer}/accounts/${target}`,
    `finding ${target} led to ${pathOf(page)}, not its account page`,
  );
  await accountState(page, 'enabled');
  await look(page, 'account');
}

async function accountState(page, expected) {
  const state = page.locator('dd.state');
  check((await state.count()) === 1, `the account page shows no live state (dd.state): ${await whereAmI(page)}`);
  const classes = ((await state.getAttribute('class')) ?? '').split(/\s+/);
  check(classes.includes(expected), `the account page says "${await state.innerText()}", expected ${expected}`);
}

async function historyRows(page) {
  return page.locator('table tbody tr').count();
}

async function fillAction(page, operation, { reason, ticket, code, revoke }) {
  const form = page.locator(`form[action$="/${operation}"]`);
  check((await form.count()) === 1, `no ${operation} form (form[action$="/${operation}"]): ${await whereAmI(page)}`);
  await form.locator('input[name=reason]').fill(reason);
  if (ticket !== undefined) await form.locator('input[name=ticket]').fill(ticket);
  if (revoke !== undefined) await form.locator('input[name=revoke_sessions]').setChecked(revoke);
  await form.locator('input[name=code]').fill(code);
  const button = form.locator('button[type=submit]');
  const label = (await button.innerText()).trim();
  const word = operation === 'disable' ? 'Disable' : 'Enable';
  check(label.startsWith(word), `the ${operation} button reads "${label}", not "${word} …"`);
  return button;
}

async function outcome(page) {
  const headline = page.locator('h1.outcome');
  check((await headline.count()) === 1, `no h1.outcome: ${await whereAmI(page)}`);
  return (await headline.innerText()).trim();
}

async function disableTheAccount() {
  const page = await signedIn('responder');
  if (!pathOf(page).endsWith(`/accounts/${target}`)) await visit(page, accountPath(customer, target), 'account');
  await accountState(page, 'enabled');
  const button = await fillAction(page, 'disable', {
    reason: 'Falcon ITP: impossible travel, then MFA fatigue (browser test)',
    ticket: 'SOC-4711',
    revoke: true,
    code: await freshCode('responder'),
  });
  await submit(page, button);
  check(/^\/actions\/[0-9a-f-]{36}$/.test(pathOf(page)), `disabling did not lead to /actions/{id}: ${await whereAmI(page)}`);
  const headline = await outcome(page);
  check(headline === 'Done: disabled', `the action page says "${headline}", not "Done: disabled"`);
  done.actions.disabled = pathOf(page).split('/').pop();
  await look(page, 'action-disabled');
  await entraSays(target, false);
}

async function aReusedCodeIsRefused() {
  const page = await signedIn('responder');
  check(lastCode.has('responder'), 'no code was used yet');
  await visit(page, accountPath(customer, target), 'account', { shoot: false });
  const before = await page.locator('dd.state').getAttribute('class');
  const rows = await historyRows(page);
  const button = await fillAction(page, 'disable', {
    reason: 'the same code again',
    revoke: false,
    code: lastCode.get('responder'),
  });
  const response = await submit(page, button);
  const refusal = page.locator('p.refusal[role=alert]');
  check((await refusal.count()) === 1, `a reused code shows no p.refusal[role=alert]: ${await whereAmI(page)}`);
  console.log(`   ${response.status()}: ${(await refusal.innerText()).trim()}`);
  check(
    (await page.locator('dd.state').getAttribute('class')) === before,
    'the account changed state after a reused code',
  );
  check((await historyRows(page)) === rows, 'a reused code added an action to the account history');
  await look(page, 'account-refusal', { shoot: false });
  await entraSays(target, !before.split(/\s+/).includes('disabled'));
}

async function aProtectedAccountIsNotDisabled() {
  const page = await signedIn('responder');
  const account = config.accounts.protected;
  await visit(page, accountPath(customer, account), 'account', { shoot: false });
  const button = await fillAction(page, 'disable', {
    reason: 'try the break-glass account (browser test)',
    revoke: false,
    code: await freshCode('responder'),
  });
  await submit(page, button);
  if ((await page.locator('h1.outcome').count()) === 1) {
    const headline = await outcome(page);
    check(headline === 'Refused: not disabled', `the action page says "${headline}", not "Refused: not disabled"`);
    done.actions.refused = pathOf(page).split('/').pop();
    console.log('   refused on the action page (h1.outcome)');
    await look(page, 'action-refused');
  } else {
    const refusal = page.locator('p.refusal');
    check((await refusal.count()) > 0, `a protected account was neither refused nor denied: ${await whereAmI(page)}`);
    console.log(`   refused on the account page (p.refusal): ${(await refusal.first().innerText()).trim()}`);
    await look(page, 'account-refusal', { shoot: false });
  }
  await entraSays(account, true);
}

async function aLeadEnablesTheAccountAgain() {
  const page = await signedIn('lead');
  await visit(page, accountPath(customer, target), 'account', { shoot: false });
  await accountState(page, 'disabled');
  const button = await fillAction(page, 'enable', {
    reason: 'the user confirmed the sign-ins were theirs (browser test)',
    ticket: 'SOC-4711',
    code: await freshCode('lead'),
  });
  await submit(page, button);
  const headline = await outcome(page);
  check(headline === 'Done: enabled', `the action page says "${headline}", not "Done: enabled"`);
  done.actions.enabled = pathOf(page).split('/').pop();
  await look(page, 'action-enabled', { shoot: false });
  await entraSays(target, true);
}

async function openDetection(page, id) {
  await visit(page, '/detections', 'detections');
  const link = page.locator(`a[href="/detections/${id}"]`);
  check((await link.count()) > 0, `/detections does not link to /detections/${id}: ${await whereAmI(page)}`);
  await Promise.all([page.waitForNavigation(), link.first().click()]);
  check(pathOf(page) === `/detections/${id}`, `the queue's link led to ${pathOf(page)}`);
  await look(page, 'detection');
}

async function h1(page) {
  return (await page.locator('h1').first().innerText()).trim();
}

async function approveAndDismissDetections() {
  const page = await signedIn('responder');
  const { approve, dismiss } = config.detections;
  await openDetection(page, approve.id);
  const approval = page.locator('form[action$="/approve"]');
  check((await approval.count()) === 1, `no approve form on /detections/${approve.id}`);
  await approval.locator('input[name=code]').fill(await freshCode('responder'));
  await submit(page, approval.getByRole('button', { name: 'Approve' }));
  // Approving leads to the action it started, whose outcome is said in words.
  const approved = await h1(page);
  check(approved.includes('Done: disabled'), `approving led to "${approved}": ${await whereAmI(page)}`);
  await entraSays(approve.account, false);
  await openDetection(page, approve.id);
  const decided = await h1(page);
  check(decided.includes('Approved'), `the approved detection says "${decided}"`);
  await look(page, 'detection-approved', { shoot: false });

  await openDetection(page, dismiss.id);
  const dismissal = page.locator('form[action$="/dismiss"]');
  check((await dismissal.count()) === 1, `no dismiss form on /detections/${dismiss.id}`);
  await dismissal.locator('input[name=reason]').fill('a known penetration test (browser test)');
  await dismissal.locator('input[name=code]').fill(await freshCode('responder'));
  await submit(page, dismissal.getByRole('button', { name: 'Dismiss' }));
  const dismissed = await h1(page);
  check(dismissed.includes('Dismissed'), `dismissing led to "${dismissed}": ${await whereAmI(page)}`);
  await look(page, 'detection-dismissed', { shoot: false });
  await entraSays(dismiss.account, true);
}

async function anAuditorDownloadsTheExport() {
  const page = await signedIn('auditor');
  const response = await visit(page, '/audit', 'audit');
  check(response.status() === 200, `/audit answered ${response.status()}: ${await whereAmI(page)}`);
  const form = page.locator('form[action="/audit/export"]');
  check((await form.count()) === 1, `/audit has no form[action="/audit/export"]: ${await whereAmI(page)}`);
  check((await form.getAttribute('method'))?.toLowerCase() === 'post', 'the export form is not POST');
  check((await form.locator('input[type=hidden][name=csrf_token]').count()) === 1, 'the export form has no csrf_token');
  for (const field of ['from', 'to']) {
    const input = form.locator(`input[name=${field}]`);
    check((await input.count()) === 1, `the export form has no field ${field}`);
    check((await input.getAttribute('type')) === 'date', `the export form's ${field} is not type=date`);
  }
  await form.locator('select[name=customer]').selectOption(customer);
  await form.locator('select[name=format]').selectOption('jsonl');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    form.getByRole('button', { name: 'Download' }).click(),
  ]);
  mkdirSync(config.download_dir, { recursive: true });
  const file = join(config.download_dir, download.suggestedFilename() || `${customer}-audit.jsonl`);
  await download.saveAs(file);
  const failure = await download.failure();
  check(failure === null, `the download failed: ${failure}`);
  check(statSync(file).size > 0, `the export ${file} is empty`);
  console.log(`   saved ${download.suggestedFilename()} (${statSync(file).size} bytes)`);
  done.export = file;
}

// The 404 page, with the customer's name taken out (it names what was asked for).
async function notFoundPage(page, path, slug) {
  const response = await page.goto(new URL(path, base).href);
  check(response.status() === 404, `${path} answered ${response.status()}, not 404: ${await whereAmI(page)}`);
  const type = response.headers()['content-type'] ?? '';
  check(type.startsWith('text/html'), `${path} answered 404 as ${type}, not as a page`);
  await look(page, 'not-found', { shoot: path.includes('no-such-customer') });
  const text = await page.locator('main').innerText();
  return { title: await page.title(), heading: await h1(page), text: text.split(slug).join('…') };
}

async function outOfScopeIsNotFound() {
  const page = await signedIn('outsider');
  const missing = await notFoundPage(page, '/customers/no-such-customer', 'no-such-customer');
  for (const path of [`/customers/${customer}`, accountPath(customer, target)]) {
    const seen = await notFoundPage(page, path, customer);
    check(
      JSON.stringify(seen) === JSON.stringify(missing),
      `${path} is not the page of a customer that does not exist: ${JSON.stringify(seen)} vs ${JSON.stringify(missing)}`,
    );
  }
  if (done.actions.disabled) {
    const response = await page.goto(new URL(`/actions/${done.actions.disabled}`, base).href);
    check(response.status() === 404, `another customer's action answered ${response.status()}, not 404`);
    await look(page, 'not-found', { shoot: false });
  }
}

async function actionsListAndAnAction() {
  const page = await signedIn('responder');
  const listed = await visit(page, '/actions', 'actions');
  check(listed.status() === 200, `/actions answered ${listed.status()}: ${await whereAmI(page)}`);
  const hrefs = await page.locator('a[href^="/actions/"]').evaluateAll((links) => links.map((a) => a.getAttribute('href')));
  const actions = hrefs.filter((href) => /^\/actions\/[0-9a-f-]{36}$/.test(href));
  check(actions.length > 0, `/actions links to no action: ${await whereAmI(page)}`);
  for (const id of Object.values(done.actions)) {
    check(actions.includes(`/actions/${id}`), `/actions does not list action ${id}`);
  }
  await Promise.all([page.waitForNavigation(), page.locator(`a[href="${actions[0]}"]`).first().click()]);
  check(/^\/actions\/[0-9a-f-]{36}$/.test(pathOf(page)), `the first listed action led to ${pathOf(page)}`);
  console.log(`   ${pathOf(page)}: ${await outcome(page)}`);
  await look(page, 'action', { shoot: false });
}

async function administrationPage() {
  const admin = await signedIn('admin');
  const response = await visit(admin, '/admin', 'admin');
  check(response.status() === 200, `/admin answered ${response.status()}: ${await whereAmI(admin)}`);
  check((await admin.locator('h1').count()) > 0, '/admin has no heading');
}

// Two pages that do not depend on each other: both are visited, whichever fails.
async function actionsAndAdministration() {
  const problems = [];
  for (const part of [actionsListAndAnAction, administrationPage]) {
    try {
      await part();
    } catch (e) {
      if (!(e instanceof StepFailure)) throw e;
      problems.push(e.message);
    }
  }
  check(problems.length === 0, problems.join('; '));
}

const STEPS = [
  ['a', 'sign in with an API token and a one-time code', signInWithApiTokenAndCode],
  ['b', 'sign in with single sign-on', signInWithSingleSignOn],
  ['c', 'the home page shows each customer’s light', homeShowsEachCustomersLight],
  ['d', 'find an account from the customer’s page', findTheAccount],
  ['e', 'disable the account', disableTheAccount],
  ['f', 'a reused one-time code is refused', aReusedCodeIsRefused],
  ['g', 'a protected account is not disabled', aProtectedAccountIsNotDisabled],
  ['h', 'a lead enables the account again', aLeadEnablesTheAccountAgain],
  ['i', 'approve one detection and dismiss another', approveAndDismissDetections],
  ['j', 'an auditor downloads the audit export', anAuditorDownloadsTheExport],
  ['k', 'customers outside the analyst’s scope are not found', outOfScopeIsNotFound],
  ['l', 'the actions list, an action, the administration page', actionsAndAdministration],
];

function chosen(letter) {
  const list = (name) => (process.env[name] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const only = list('E2E_ONLY');
  return (only.length === 0 || only.includes(letter)) && !list('E2E_SKIP').includes(letter);
}

function checkOurTotp() {
  const { totp_hex: hex, unix, code } = config.totp_check;
  const ours = totp(hex, Math.floor(unix / STEP_SECS));
  check(ours === code, `this script's TOTP gives ${ours} where killswitch's gives ${code}`);
}

async function main() {
  checkOurTotp();
  const keepGoing = process.env.E2E_KEEP_GOING === '1';
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const passed = [];
  const failed = [];
  try {
    for (const [letter, name, step] of STEPS) {
      if (!chosen(letter)) {
        console.log(`-- ${letter}. ${name}: skipped`);
        continue;
      }
      console.log(`== ${letter}. ${name}`);
      const started = Date.now();
      try {
        await step();
        passed.push(letter);
        console.log(`   ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed.push(letter);
        console.error(`FAILED ${letter}. ${name}: ${e instanceof StepFailure ? e.message : e.stack}`);
        if (!keepGoing) break;
      }
    }
  } finally {
    for (const context of contexts) await context.close().catch(() => {});
    await browser.close();
  }
  writeFileSync(config.results, JSON.stringify({ passed, failed, export: done.export, actions: done.actions }));
  for (const v of violations) {
    console.error(`axe ${v.impact} ${v.id} on ${v.page} (${v.url}; ${v.views.join(', ')}): ${v.help}`);
    for (const node of v.nodes) console.error(`    ${node.target}: ${node.html}`);
  }
  if (violations.length > 0) console.error(`${violations.length} serious or critical axe-core violations`);
  if (failed.length > 0 || violations.length > 0) process.exit(1);
  console.log(`passed: ${passed.join(', ')}`);
}

await main();
