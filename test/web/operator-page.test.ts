// The operator page in Chromium: refuses without the service key, lists sessions (status, decision, age, link) with it.
import type { Page } from 'playwright-core';
import { ADMIN_KEY } from '../helpers/harness';
import { describeBrowser, sandboxWithBrowser } from './browser';

/** Enters the service key in the page's form, as an operator does. */
async function signIn(page: Page, key = ADMIN_KEY): Promise<void> {
  await page.fill('#key', key);
  await page.click('#key-form button[type=submit]');
}

/** Everything the page keeps in the browser's Web Storage, which Chromium writes to the profile on disk. */
const webStorage = (page: Page) => page.evaluate(() => JSON.stringify({ session: { ...sessionStorage }, local: { ...localStorage } }));

/** The page signed in with the service key, showing session `id`. */
async function openOn(page: Page, brokerUrl: string, id: string): Promise<void> {
  await page.goto(`${brokerUrl}/operator#${id}`);
  await signIn(page);
  await page.locator('#detail').waitFor();
}

/** A new session's interviewId. */
async function newSession(brokerUrl: string): Promise<string> {
  const res = await fetch(`${brokerUrl}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  return ((await res.json()) as { interviewId: string }).interviewId;
}

/**
 * Holds the answer to GET /sessions/<id> at the network until `release()`; `handled()` resolves once the page has
 * received it: its handler goes on from there in the same microtask checkpoint, so by then the handler has looked at it
 * (and dropped it, or shown it). `done()` takes the hold away.
 */
async function holdAnswer(page: Page, id: string) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  await page.route(`**/sessions/${id}`, async (route) => {
    await released;
    await route.continue();
  });
  await page.evaluate(() => {
    const read: string[] = ((window as unknown as { answersRead: string[] }).answersRead = []);
    const fetch = window.fetch;
    window.fetch = (input, init) => fetch(input, init).finally(() => read.push(String(input)));
  });
  return {
    release,
    handled: () => page.waitForFunction((held) => (window as unknown as { answersRead: string[] }).answersRead.some((u) => u.endsWith(`/sessions/${held}`)), id),
    done: () => page.unroute(`**/sessions/${id}`),
  };
}

describeBrowser('operator page (Chromium)', () => {
  const env = sandboxWithBrowser();

  test('unauthorized without a valid key; lists the session and opens its results with the key', async () => {
    const { broker, browser } = env;
    const created = { interviewId: await newSession(broker.url) };
    const { page } = browser;

    const res = await page.goto(`${broker.url}/operator`);
    expect(res?.headers()['content-security-policy']).toMatch(/script-src 'self'/);
    await page.waitForFunction(() => /unauthorized/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.locator('#sessions tr').count()).toBe(0);

    await page.fill('#key', 'not-the-key-0123456789abcdefghij');
    await page.click('#key-form button[type=submit]');
    await page.waitForFunction(() => /refused/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.textContent('#status')).toMatch(/unauthorized/);
    expect(await page.locator('#sessions tr').count()).toBe(0);

    await page.fill('#key', ADMIN_KEY);
    await page.click('#key-form button[type=submit]');
    const row = page.locator(`#sessions tr[data-interview-id="${created.interviewId}"]`);
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    expect(cells[0]).toBe(created.interviewId);
    expect(cells[2]).toBe('pending');
    expect(cells[4]).toMatch(/^\d+ (s|min)$/);

    await row.locator('a').click();
    await page.locator('#detail').waitFor();
    expect(JSON.parse((await page.textContent('#detail-json')) ?? '{}').interviewId).toBe(created.interviewId);
    // The key is in the page's memory only: not in Web Storage (on disk), a cookie or the URL; a reload asks again.
    expect(await webStorage(page)).not.toContain(ADMIN_KEY);
    expect(await page.context().cookies()).toEqual([]);
    expect(page.url()).not.toContain(ADMIN_KEY);
    await page.reload();
    await page.waitForFunction(() => /unauthorized/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.locator('#sessions tr').count()).toBe(0);
  }, 60_000);

  test('"Forget key" also clears the session it showed: no personal data left in the page, its DOM or its address', async () => {
    const { broker, browser } = env;
    const created = { interviewId: await newSession(broker.url) };
    const { page } = browser;
    await page.goto(`${broker.url}/operator#${created.interviewId}`);
    await signIn(page);
    await page.locator('#detail').waitFor();
    expect(await page.textContent('#detail-json')).toContain(created.interviewId);
    await page.click('#forget');
    await page.waitForFunction(() => /forgotten/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.textContent('#detail-json')).toBe('');
    expect(await page.textContent('#detail-title')).toBe('');
    expect(await page.locator('#sessions tr').count()).toBe(0);
    expect(await page.isHidden('#more')).toBe(true);
    expect(page.url()).not.toContain('#');
    expect(await webStorage(page)).not.toContain(ADMIN_KEY);
  }, 60_000);

  test('an answer still on its way when the key is forgotten is dropped, and a refused key takes what was shown with it', async () => {
    const { broker, browser } = env;
    const [first, second] = [await newSession(broker.url), await newSession(broker.url)];
    const { page } = browser;
    await openOn(page, broker.url, first);
    // The second session's answer is held at the network until the key has been forgotten.
    const held = await holdAnswer(page, second);
    try {
      await page.evaluate((id) => (location.hash = `#${id}`), second);
      await page.click('#forget');
      held.release();
      await held.handled();
      expect(await page.isHidden('#detail')).toBe(true);
      expect(await page.textContent('#detail-json')).toBe('');
      expect(await page.textContent('#status')).toBe('Key forgotten.');
    } finally {
      await held.done();
    }
    // A refused key: what the previous key showed goes, and the refused key is not kept.
    await openOn(page, broker.url, first);
    await page.fill('#key', 'not-the-key-0123456789abcdefghij');
    await page.click('#key-form button[type=submit]');
    await page.waitForFunction(() => /refused/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.isHidden('#detail')).toBe(true);
    expect(await page.textContent('#detail-json')).toBe('');
    expect(await page.locator('#sessions tr').count()).toBe(0);
    expect(await webStorage(page)).not.toContain(ADMIN_KEY);
  }, 60_000);

  test("the detail shown is always the address's session: another's goes at once, a late answer is dropped, a failed load shows none", async () => {
    const { broker, browser } = env;
    const [first, second, third] = [await newSession(broker.url), await newSession(broker.url), await newSession(broker.url)];
    const { page } = browser;
    await openOn(page, broker.url, first);
    const held = await holdAnswer(page, second);
    try {
      // Asked for the second (its answer held): the first's results leave the page at once.
      await page.evaluate((id) => (location.hash = `#${id}`), second);
      await page.waitForFunction(() => /Loading/.test(document.getElementById('status')!.textContent ?? ''));
      expect(await page.isHidden('#detail')).toBe(true);
      expect(await page.textContent('#detail-json')).toBe('');
      // Then the third, answered first; the second's answer comes last and is dropped.
      await page.evaluate((id) => (location.hash = `#${id}`), third);
      await page.waitForFunction((id) => (document.getElementById('detail-json')!.textContent ?? '').includes(id), third);
      held.release();
      await held.handled();
      expect(await page.textContent('#detail-json')).toContain(third);
      expect(await page.textContent('#detail-json')).not.toContain(second);
      expect(await page.textContent('#detail-title')).toContain(third);
    } finally {
      await held.done();
    }
    // A session that cannot be loaded: the error, and no other session's results under its address.
    await page.evaluate(() => (location.hash = '#ffffffffffffffffffffffff'));
    await page.waitForFunction(() => /HTTP 404/.test(document.getElementById('status')!.textContent ?? ''));
    expect(await page.isHidden('#detail')).toBe(true);
    expect(await page.textContent('#detail-json')).toBe('');
    // A late failure for an address left meanwhile says nothing over the session shown now.
    const gone = 'eeeeeeeeeeeeeeeeeeeeeeee';
    const heldFailure = await holdAnswer(page, gone);
    try {
      await page.evaluate((id) => (location.hash = `#${id}`), gone);
      await page.evaluate((id) => (location.hash = `#${id}`), third);
      await page.waitForFunction((id) => (document.getElementById('detail-json')!.textContent ?? '').includes(id), third);
      heldFailure.release();
      await heldFailure.handled();
      expect(await page.textContent('#status')).not.toMatch(/HTTP 404/);
      expect(await page.textContent('#detail-json')).toContain(third);
    } finally {
      await heldFailure.done();
    }
    // An address cleared while a session loads: the page says what it lists, not "Loading" for good.
    const heldLoad = await holdAnswer(page, first);
    try {
      await page.evaluate((id) => (location.hash = `#${id}`), first);
      await page.waitForFunction(() => /Loading/.test(document.getElementById('status')!.textContent ?? ''));
      await page.evaluate(() => (location.hash = ''));
      await page.waitForFunction(() => /^\d+ session\(s\)$/.test(document.getElementById('status')!.textContent ?? ''));
      // The held answer arrives after the address was cleared, and changes nothing.
      heldLoad.release();
      await heldLoad.handled();
      expect(await page.textContent('#status')).toMatch(/^\d+ session\(s\)$/);
      expect(await page.isHidden('#detail')).toBe(true);
    } finally {
      await heldLoad.done();
    }
    // Hashes that are no session id: `.` and `..` would turn the fetch into the list, or `/` with the service key.
    const keyed: string[] = [];
    const onRequest = (r: { url: () => string; headers: () => Record<string, string> }) => {
      if (r.headers().authorization) keyed.push(new URL(r.url()).pathname);
    };
    page.on('request', onRequest);
    try {
      for (const hash of ['#.', '#..', '#%2e%2e', '#%2e', '#a%2fb']) {
        await page.evaluate((h) => (location.hash = h), hash);
        await page.waitForFunction(() => /^No such session/.test(document.getElementById('status')!.textContent ?? ''));
        expect(await page.isHidden('#detail')).toBe(true);
        await page.evaluate(() => (location.hash = ''));
        await page.waitForFunction(() => /^\d+ session\(s\)$/.test(document.getElementById('status')!.textContent ?? ''));
      }
      expect(keyed).toEqual([]);
    } finally {
      page.off('request', onRequest);
    }
  }, 60_000);

  test('the API docs render under their own CSP (never framed, nothing from other origins), opened apart from the page holding the key', async () => {
    const { broker, browser } = env;
    const { page } = browser;
    await page.goto(`${broker.url}/operator`);
    // A new tab without an opener: the docs page shares nothing with the one holding the key.
    expect(await page.getAttribute('a[href="/docs"]', 'target')).toBe('_blank');
    expect(await page.getAttribute('a[href="/docs"]', 'rel')).toMatch(/noopener/);
    const violations: string[] = [];
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
    });
    const res = await page.goto(`${broker.url}/docs`);
    const csp = res?.headers()['content-security-policy'] ?? '';
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/https:|unsafe-inline|validator\.swagger\.io/);
    await page.locator('.swagger-ui .info .title').waitFor();
    expect(await page.textContent('.swagger-ui .info .title')).toMatch(/Incode token broker/);
    await page.locator('.opblock-summary-path', { hasText: '/session/resume' }).first().waitFor();
    // No script, connection or frame refused. (Swagger UI applies one inline style that the plugin's own policy
    // refuses too: cosmetic, and left refused rather than allowing inline styles.)
    expect(violations.filter((v) => !/directive 'style-src/.test(v))).toEqual([]);
  }, 60_000);
});
