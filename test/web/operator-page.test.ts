// The operator page in Chromium: refuses without the service key, lists sessions (status, decision, age, link) with it.
import { ADMIN_KEY } from '../helpers/harness';
import { describeBrowser, sandboxWithBrowser } from './browser';

describeBrowser('operator page (Chromium)', () => {
  const env = sandboxWithBrowser();

  test('unauthorized without a valid key; lists the session and opens its results with the key', async () => {
    const { broker, browser } = env;
    const created = (await (await fetch(`${broker.url}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).json()) as { interviewId: string };
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
    // The key stays in the tab's sessionStorage, never in a cookie or the URL.
    expect(await page.evaluate(() => sessionStorage.getItem('broker.serviceKey'))).toBe(ADMIN_KEY);
    expect(page.url()).not.toContain(ADMIN_KEY);
  }, 60_000);
});
