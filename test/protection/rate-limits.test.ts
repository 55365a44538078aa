// POST /session rate limits: per client IP (TRUST_PROXY_HOPS, never blind X-Forwarded-For), per
// externalCustomerId, global budget, memory by default, and one limit shared by two processes through Redis.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import request from 'supertest';
import type { EmulatorApp } from '../../src/emulator/app';
import { clientNetwork, failureLimiter, ipv6Site, MemoryRateCounter, RedisRateCounter, type RateCounter } from '../../src/protection/rate-counter';
import { startBrokerProcess } from '../helpers/broker-process';
import { WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET, brokerEnv, recordRequests, startBroker, startEmulator, waitFor, type Running } from '../helpers/harness';
import { describeWith, services } from '../helpers/services';

type Broker = Awaited<ReturnType<typeof startBroker>>;

const post = (url: string, xff?: string, body: Record<string, unknown> = {}) => {
  const r = request(url).post('/session');
  if (xff !== undefined) r.set('x-forwarded-for', xff);
  return r.send(body);
};

describe('POST /session rate limits (memory counter)', () => {
  let emu: Running<EmulatorApp>;
  const brokers: Broker[] = [];
  const broker = async (env: Record<string, string>) => {
    const b = await startBroker(brokerEnv(emu.url, env));
    brokers.push(b);
    return b;
  };
  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterEach(async () => {
    while (brokers.length) await brokers.pop()!.close();
  });
  afterAll(async () => emu.close());

  it('refuses the request over the per-IP limit with 429, Retry-After and RATE_LIMITED', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '3', RATE_LIMIT_WINDOW_MS: '60000' });
    const before = emu.app.emulator.sessions.size;
    for (let i = 0; i < 3; i++) await post(b.url).expect(200);
    const res = await post(b.url).expect(429);
    expect(res.body).toEqual({ code: 'RATE_LIMITED', message: expect.any(String), requestId: expect.any(String) });
    const retry = Number(res.headers['retry-after']);
    expect(Number.isInteger(retry)).toBe(true);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(res.headers['x-ratelimit-limit']).toBe('3');
    // A refused request never reached Incode (no billable session).
    expect(emu.app.emulator.sessions.size).toBe(before + 3);
    // The resume route shares the per-IP budget: it mints tokens too.
    expect((await request(b.url).post('/session/resume').send({ resumeToken: 'x'.repeat(43) }).expect(429)).body.code).toBe('RATE_LIMITED');
  });

  it('uses a memory counter by default, and the window resets', async () => {
    // A window long enough for three requests on a loaded machine, short enough to wait out.
    const b = await broker({ RATE_LIMIT_PER_IP: '2', RATE_LIMIT_WINDOW_MS: '3000' });
    expect(b.config.redisUrl).toBeUndefined();
    await post(b.url).expect(200);
    await post(b.url).expect(200);
    const r = await post(b.url).expect(429);
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(r.headers['retry-after'])).toBeLessThanOrEqual(3);
    await waitFor(async () => (await post(b.url)).status === 200, 8000, 100);
  });

  it('TRUST_PROXY_HOPS=0 ignores X-Forwarded-For: a spoofed header does not reset the limit', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '2', TRUST_PROXY_HOPS: '0' });
    await post(b.url, '1.1.1.1').expect(200);
    await post(b.url, '2.2.2.2').expect(200);
    for (const spoof of ['3.3.3.3', '4.4.4.4, 5.5.5.5', '::1', 'unknown', '127.0.0.2'])
      expect((await post(b.url, spoof).expect(429)).body.code).toBe('RATE_LIMITED');
  });

  it('TRUST_PROXY_HOPS=1 limits by the right-most address; a spoofed left-most entry does not help', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '2', TRUST_PROXY_HOPS: '1' });
    // Client A (203.0.113.10) behind the load balancer.
    await post(b.url, '203.0.113.10').expect(200);
    await post(b.url, '203.0.113.10').expect(200);
    await post(b.url, '203.0.113.10').expect(429);
    // A forges an extra left-most entry; the load balancer appends the real address on the right.
    await post(b.url, '198.51.100.1, 203.0.113.10').expect(429);
    await post(b.url, '198.51.100.2,203.0.113.10').expect(429);
    // Client B has its own budget.
    await post(b.url, '203.0.113.20').expect(200);
    await post(b.url, '10.0.0.1, 203.0.113.20').expect(200);
    await post(b.url, '203.0.113.20').expect(429);
    // With no header at all the socket address (the proxy) is the client.
    await post(b.url).expect(200);
  });

  it('TRUST_PROXY_HOPS=2 reads exactly two hops deep', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '1', TRUST_PROXY_HOPS: '2' });
    // client, cdn-edge → the client is the second entry from the right.
    await post(b.url, '203.0.113.7, 192.0.2.1').expect(200);
    await post(b.url, '203.0.113.7, 192.0.2.99').expect(429);
    await post(b.url, '6.6.6.6, 203.0.113.7, 192.0.2.1').expect(429);
    await post(b.url, '203.0.113.8, 192.0.2.1').expect(200);
  });

  it('limits per externalCustomerId across addresses', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '2', TRUST_PROXY_HOPS: '1' });
    await post(b.url, '203.0.113.1', { externalCustomerId: 'cust-a' }).expect(200);
    await post(b.url, '203.0.113.2', { externalCustomerId: 'cust-a' }).expect(200);
    const r = await post(b.url, '203.0.113.3', { externalCustomerId: 'cust-a' }).expect(429);
    expect(r.body.code).toBe('RATE_LIMITED');
    expect(r.headers['retry-after']).toBeDefined();
    expect(r.body.message).toMatch(/customer/);
    // Another customer, and no customer at all, are not affected.
    await post(b.url, '203.0.113.3', { externalCustomerId: 'cust-b' }).expect(200);
    await post(b.url, '203.0.113.3').expect(200);
  });

  it('counts an IPv6 client by its /64 and, with a budget of its own, its site\'s /48 (RATE_LIMIT_PER_IPV6_SITE)', async () => {
    const b = await broker({ TRUST_PROXY_HOPS: '1', RATE_LIMIT_PER_IP: '2', RATE_LIMIT_PER_IPV6_SITE: '3' });
    await post(b.url, '2001:db8:1:1::1').expect(200);
    await post(b.url, '2001:db8:1:1::2').expect(200);
    await post(b.url, '2001:db8:1:1::3').expect(429);
    // Another /64 of the same /48: its own per-IP budget, but the site's is nearly spent.
    await post(b.url, '2001:db8:1:2::1').expect(200);
    const over = await post(b.url, '2001:db8:1:3::1').expect(429);
    expect(over.body.message).toMatch(/from this network/);
    expect(over.headers['x-ratelimit-limit']).toBe('3');
    // Another site, and IPv4, are not counted with it.
    await post(b.url, '2001:db8:2:1::1').expect(200);
    await post(b.url, '203.0.113.9').expect(200);
  });

  it('counts no request refused for its options: a bad countryCode or flow never uses up a customer\'s or the service\'s budget', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '2', RATE_LIMIT_GLOBAL: '3' });
    for (const bad of [{ countryCode: 'ZZZ' }, { configurationId: 'flow-light' }, { redirectionUrl: 'https://elsewhere.example.com/' }, { countryCode: 'QQQ' }])
      expect((await request(b.url).post('/session').send({ externalCustomerId: 'victim', ...bad }).expect(400)).body.code).toMatch(/^(INVALID_COUNTRY_CODE|CONFIGURATION_NOT_ALLOWED|REDIRECTION_URL_NOT_ALLOWED)$/);
    await request(b.url).post('/session').send({ externalCustomerId: 'victim' }).expect(200);
    await request(b.url).post('/session').send({ externalCustomerId: 'victim' }).expect(200);
    await request(b.url).post('/session').send({ externalCustomerId: 'victim' }).expect(429);
  });

  it('counts one customer id however it is spelled, and per calling app', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '2', CALLER_AUTH: 'app-keys', APP_API_KEYS: 'app-one-key-0123456789abcdef,app-two-key-0123456789abcdef' });
    const as = (key: string, ext: string) => request(b.url).post('/session').set('x-app-key', key).send({ externalCustomerId: ext });
    await as('app-one-key-0123456789abcdef', 'victim').expect(200);
    await as('app-one-key-0123456789abcdef', 'VICTIM').expect(200);
    await as('app-one-key-0123456789abcdef', 'victim\u00a0').expect(429);
    // Variation selectors and tag characters display as nothing too, and are taken (emoji need them): the same id; ß
    // folds to ss.
    for (const ext of ['victim\ufe0f', 'vic\u{e0041}tim']) await as('app-one-key-0123456789abcdef', ext).expect(429);
    await as('app-one-key-0123456789abcdef', 'strasse').expect(200);
    await as('app-one-key-0123456789abcdef', 'STRASSE').expect(200);
    await as('app-one-key-0123456789abcdef', 'Straße').expect(429);
    // An invisible character between a letter and its accent does not make another spelling of it.
    await as('app-one-key-0123456789abcdef', 'José').expect(200);
    await as('app-one-key-0123456789abcdef', 'JOSE\u0301').expect(200);
    for (const ext of ['Jose\ufe0f\u0301', 'JOS\u00c9\ufe0e']) await as('app-one-key-0123456789abcdef', ext).expect(429);
    // Characters that would make an id display as another one are refused outright, before any budget is counted.
    for (const ext of ['victim\u202e', 'vic\u2066tim', 'victim\u0085', 'vic\u200btim\u00ad', 'victim\u3164', 'VICTIM\u034f', 'Jose\u200b\u0301', 'JOS\u00c9\u2060'])
      expect((await as('app-one-key-0123456789abcdef', ext).expect(400)).body.code).toBe('VALIDATION_FAILED');
    // Another app's customer of the same id has a budget of its own.
    await as('app-two-key-0123456789abcdef', 'victim').expect(200);
  });

  it('counts an IPv6 client by its /64: hopping addresses inside it does not reset the limit', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '2', TRUST_PROXY_HOPS: '1' });
    await post(b.url, '2001:db8:1:2::1').expect(200);
    await post(b.url, '2001:db8:1:2::2').expect(200);
    await post(b.url, '2001:db8:1:2:ffff::6').expect(429);
    await post(b.url, '2001:db8:1:3::1').expect(200);
    // IPv4, also when mapped into IPv6, stays per address.
    await post(b.url, '::ffff:203.0.113.77').expect(200);
    await post(b.url, '203.0.113.77').expect(200);
    await post(b.url, '203.0.113.77').expect(429);
  });

  it('enforces a global budget per window across addresses and customers', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '100', RATE_LIMIT_GLOBAL: '3', TRUST_PROXY_HOPS: '1' });
    for (let i = 0; i < 3; i++) await post(b.url, `198.51.100.${i + 1}`, { externalCustomerId: `c${i}` }).expect(200);
    const r = await post(b.url, '198.51.100.50', { externalCustomerId: 'c50' }).expect(429);
    expect(r.body.message).toMatch(/service/);
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('limits are off at 0, and concurrent bursts are counted exactly', async () => {
    const off = await broker({ RATE_LIMIT_PER_IP: '0' });
    const statuses = await Promise.all(Array.from({ length: 8 }, () => post(off.url).then((r) => r.status)));
    expect(statuses.every((s) => s === 200)).toBe(true);
    const on = await broker({ RATE_LIMIT_PER_IP: '5' });
    const burst = await Promise.all(Array.from({ length: 12 }, () => post(on.url).then((r) => r.status)));
    expect(burst.filter((s) => s === 200)).toHaveLength(5);
    expect(burst.filter((s) => s === 429)).toHaveLength(7);
  });

  it('ipv6Site: the /48 of an IPv6 network, none for IPv4', () => {
    expect(ipv6Site(clientNetwork('2001:0db8:0001:0002::1'))).toBe('2001:db8:1::/48');
    expect(ipv6Site(clientNetwork('2001:db8::'))).toBe('2001:db8:0::/48');
    expect(ipv6Site(clientNetwork('203.0.113.7'))).toBeNull();
    expect(ipv6Site(clientNetwork('::ffff:203.0.113.7'))).toBeNull();
    expect(ipv6Site('unknown')).toBeNull();
  });

  it('clientNetwork: IPv4 as is (also mapped into IPv6), IPv6 by its /64 however it is written', () => {
    expect(clientNetwork('203.0.113.7')).toBe('203.0.113.7');
    expect(clientNetwork('::ffff:203.0.113.7')).toBe('203.0.113.7');
    for (const ip of ['2001:db8:1:2::1', '2001:0db8:0001:0002:aaaa:bbbb:cccc:dddd', '2001:db8:1:2:ffff::6']) expect(clientNetwork(ip)).toBe('2001:db8:1:2::/64');
    expect(clientNetwork('2001:db8::')).toBe('2001:db8:0:0::/64');
    expect(clientNetwork('::1')).toBe('0:0:0:0::/64');
    // Every spelling of an IPv4-mapped address is its IPv4 address.
    for (const ip of ['::ffff:102:304', '0:0:0:0:0:ffff:1.2.3.4', '::FFFF:1.2.3.4', '0000:0000:0000:0000:0000:ffff:0102:0304']) expect(clientNetwork(ip)).toBe('1.2.3.4');
    // As a proxy may write it in X-Forwarded-For, with a port or brackets.
    expect(clientNetwork('203.0.113.7:51234')).toBe('203.0.113.7');
    expect(clientNetwork('[2001:db8:1:2::1]:443')).toBe('2001:db8:1:2::/64');
    // A link-local peer's zone id names an interface here, not the client (and is no URL host: it must not throw).
    expect(clientNetwork('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientNetwork('::ffff:1.2.3.4%1')).toBe('1.2.3.4');
    // Not an address: the peer's own, never the text (each made-up value would get a budget of its own).
    for (const junk of ['not-an-ip', 'x'.repeat(10_000), '1.2.3.4.5', '203.0.113.7, 198.51.100.1']) {
      expect(clientNetwork(junk, '10.0.0.9')).toBe('10.0.0.9');
      expect(clientNetwork(junk)).toBe('unknown');
    }
  });

  it('MemoryRateCounter: fixed windows, in-order limits that stop at the first one exceeded', async () => {
    const c = new MemoryRateCounter();
    expect(await c.hitAll([{ key: 'a', max: 1 }], 1000)).toBeNull();
    const second = await c.hitAll([{ key: 'a', max: 1 }], 1000);
    expect(second).toEqual({ index: 0, count: 2, resetMs: expect.any(Number) });
    expect(second!.resetMs).toBeGreaterThan(0);
    expect(second!.resetMs).toBeLessThanOrEqual(1000);
    // Refused by the first limit: the second key is not charged.
    expect(await c.hitAll([{ key: 'a', max: 1 }, { key: 'g', max: 5 }], 1000)).toMatchObject({ index: 0 });
    expect(await c.hitAll([{ key: 'b', max: 5 }, { key: 'g', max: 1 }], 1000)).toBeNull();
    expect(await c.hitAll([{ key: 'b', max: 5 }, { key: 'g', max: 1 }], 1000)).toMatchObject({ index: 1, count: 2 });
    // peek reads a count and the time left of its window without adding to it; no window reads 0 and a whole one.
    const counts = async (key: string) => (await c.peek(key, 1000)).count;
    expect([await counts('g'), await counts('g'), await counts('never')]).toEqual([2, 2, 0]);
    expect((await c.peek('never', 1000)).resetMs).toBe(1000);
    await c.hitAll([{ key: 'short', max: 9 }], 1000);
    const short = await c.peek('short', 1000);
    expect(short.count).toBe(1);
    expect(short.resetMs).toBeGreaterThan(0);
    expect(short.resetMs).toBeLessThanOrEqual(1000);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await c.peek('short', 1000)).toEqual({ count: 0, resetMs: 1000 });
    await c.close();
  });

  it('MemoryRateCounter measures windows on a monotonic clock: the wall clock stepped back an hour does not stretch one by an hour', async () => {
    const c = new MemoryRateCounter();
    await c.hitAll([{ key: 'a', max: 1 }], 1000);
    const wall = Date.now();
    const spy = jest.spyOn(Date, 'now').mockReturnValue(wall - 3_600_000);
    try {
      const refused = await c.hitAll([{ key: 'a', max: 1 }], 1000);
      expect(refused!.resetMs).toBeLessThanOrEqual(1000);
      expect((await c.peek('a', 1000)).resetMs).toBeLessThanOrEqual(1000);
    } finally {
      spy.mockRestore();
    }
    await c.close();
  });

  it('MemoryRateCounter keeps only the current windows, whatever other window lengths it also counts', async () => {
    const c = new MemoryRateCounter();
    // A long window first (the webhook token endpoint's minute beside POST /session's short one): it must not hold the
    // short windows that end behind it.
    await c.hitAll([{ key: 'token:net', max: 10 }], 60_000);
    for (let i = 0; i < 5000; i++) await c.hitAll([{ key: `ip:${i}`, max: 10 }], 300);
    await new Promise((r) => setTimeout(r, 350));
    // A key whose window started again is counted anew, and kept (moved behind the rest); with that one hit the
    // 4,999 ended windows went.
    await c.hitAll([{ key: 'ip:0', max: 10 }], 300);
    expect(c.size).toBe(2);
    expect((await c.peek('ip:0', 300)).count).toBe(1);
    expect((await c.peek('token:net', 60_000)).count).toBe(1);
    c.clear();
    expect(c.size).toBe(0);
    await c.close();
  });

  it('MemoryRateCounter holds at most maxKeys: a new key is refused (full) while those counted go on, never an old one forgotten', async () => {
    let full = 0;
    const c = new MemoryRateCounter({ maxKeys: 3, full: () => full++ });
    for (const k of ['a', 'b', 'c']) expect(await c.hitAll([{ key: k, max: 1 }], 60_000)).toBeNull();
    const refused = await c.hitAll([{ key: 'd', max: 5 }], 60_000);
    expect(refused).toEqual({ index: 0, count: 0, resetMs: expect.any(Number), full: true });
    expect(refused!.resetMs).toBeGreaterThan(0);
    expect(refused!.resetMs).toBeLessThanOrEqual(60_000);
    expect(full).toBe(1);
    expect(c.size).toBe(3);
    // A client already over its limit stays over it: forgetting its key to make room would give it a fresh budget.
    expect(await c.hitAll([{ key: 'a', max: 1 }], 60_000)).toMatchObject({ index: 0, count: 2 });
    expect(full).toBe(1);
    // The first key of a request counted, its second one new: refused at that one, and the first not charged for it.
    expect(await c.hitAll([{ key: 'b', max: 9 }, { key: 'e', max: 9 }], 60_000)).toMatchObject({ index: 1, full: true });
    expect((await c.peek('b', 60_000)).count).toBe(1);
    // The service's own budget is one key every client shares: never refused for room.
    expect(await c.hitAll([{ key: 'b', max: 9 }, { key: 'global:all', max: 9, shared: true }], 60_000)).toBeNull();
    expect((await c.peek('global:all', 60_000)).count).toBe(1);
    // Ended windows make room, of any length.
    const d = new MemoryRateCounter({ maxKeys: 2 });
    await d.hitAll([{ key: 'x', max: 9 }], 50);
    await d.hitAll([{ key: 'y', max: 9 }], 60_000);
    expect(await d.hitAll([{ key: 'z', max: 9 }], 60_000)).toMatchObject({ full: true });
    await new Promise((r) => setTimeout(r, 80));
    expect(await d.hitAll([{ key: 'z', max: 9 }], 60_000)).toBeNull();
    expect(d.size).toBe(2);
  });

  it('failureLimiter over a full counter counts the failures it cannot take together: guessing from new networks stops too', async () => {
    const c = new MemoryRateCounter({ maxKeys: 1 });
    await c.hitAll([{ key: 'somebody', max: 9 }], 60_000);
    const limited = failureLimiter(c, 3, 60_000);
    let checks = 0;
    const guess = (net: string, right = false) => limited(net, () => (checks++, right));
    // Each failure from a network the counter cannot hold is still answered as a failure, and counted in the overflow.
    for (let i = 0; i < 3; i++) expect(await guess(`net-${i}`)).toEqual({ outcome: 'failed' });
    // Spent: a network with no failures of its own is refused unchecked, the right secret too.
    expect(await guess('net-9', true)).toEqual({ outcome: 'refused', resetMs: expect.any(Number) });
    expect(checks).toBe(3);
    // Its window is measured on a monotonic clock: the wall clock stepped back an hour does not stretch it by an hour.
    const wall = Date.now();
    const spy = jest.spyOn(Date, 'now').mockReturnValue(wall - 3_600_000);
    try {
      const refused = await guess('net-10');
      expect(refused.outcome).toBe('refused');
      expect((refused as { resetMs: number }).resetMs).toBeLessThanOrEqual(60_000);
    } finally {
      spy.mockRestore();
    }
  });

  it('a full in-memory counter refuses new clients with 429 before Incode is called, counts them and warns once', async () => {
    const b = await broker({ RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '100', RATE_LIMIT_MEMORY_MAX_KEYS: '4', TRUST_PROXY_HOPS: '1' });
    const before = emu.app.emulator.sessions.size;
    // Two clients, each an address and a customer id: four keys.
    await post(b.url, '198.51.100.1', { externalCustomerId: 'c-1' }).expect(200);
    await post(b.url, '198.51.100.2', { externalCustomerId: 'c-2' }).expect(200);
    for (let i = 3; i < 6; i++) {
      const r = await post(b.url, `198.51.100.${i}`, { externalCustomerId: `c-${i}` }).expect(429);
      expect(r.body).toEqual({ code: 'RATE_LIMITED', message: expect.stringMatching(/^Too many clients are being counted right now; retry in \d+ s$/), requestId: expect.any(String) });
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(r.headers['x-ratelimit-limit']).toBeUndefined();
    }
    // Those already counted go on.
    await post(b.url, '198.51.100.1', { externalCustomerId: 'c-1' }).expect(200);
    expect(emu.app.emulator.sessions.size).toBe(before + 3);
    expect((await request(b.url).get('/metrics').expect(200)).text).toMatch(/^rate_limit_counter_full_total 3$/m);
    expect(b.logs.lines.filter((l) => l.includes('the in-memory rate counter is full'))).toHaveLength(1);
  });

  it('the webhook token endpoint checks one request of a network at a time: a right guess sent amid the guesses earns nothing', async () => {
    // A counter that answers its reads late, as a shared one over the network does: checked side by side, every guess
    // (the right one too) would read the count before any failure was added to it.
    const slow = new MemoryRateCounter();
    // Reads are held until the right request has arrived too: the count each answers is what it was when asked.
    let allArrived!: () => void;
    const gate = new Promise<void>((resolve) => (allArrived = resolve));
    const counter: RateCounter = {
      hitAll: (entries, windowMs) => slow.hitAll(entries, windowMs),
      peek: async (key, windowMs) => {
        const seen = await slow.peek(key, windowMs);
        await gate;
        return seen;
      },
      close: () => slow.close(),
    };
    const b = await startBroker(brokerEnv(emu.url, { TRUST_PROXY_HOPS: '1' }), { rateCounter: counter });
    brokers.push(b);
    const seen = recordRequests(b.app.server);
    const arrived = (n: number) => waitFor(() => seen.urls.filter((u) => u === '/webhooks/incode/token').length >= n || null, 5000, 5);
    const token = (secret: string) =>
      request(b.url).post('/webhooks/incode/token').set('x-forwarded-for', '203.0.113.77').auth(WEBHOOK_CLIENT_ID, secret).type('form').send({ grant_type: 'client_credentials' });
    const guesses = Array.from({ length: 30 }, (_, i) => token(`guess-${i}`).then((r) => r.status));
    // Sent once every guess is in, while their reads are still held; the reads go on once it is in too.
    await arrived(30);
    const answer = token(WEBHOOK_CLIENT_SECRET).then((r) => r);
    await arrived(31);
    seen.stop();
    allArrived();
    const right = await answer;
    expect((await Promise.all(guesses)).every((st) => st === 401)).toBe(true);
    expect([right.status, right.body.code]).toEqual([429, 'RATE_LIMITED']);
    expect(right.body).not.toHaveProperty('access_token');
  });

  it('the webhook token endpoint refuses a network over its failed-attempt limit even the right secret, and no other network', async () => {
    const b = await broker({ TRUST_PROXY_HOPS: '1' });
    const token = (xff: string, secret: string) =>
      request(b.url).post('/webhooks/incode/token').set('x-forwarded-for', xff).auth(WEBHOOK_CLIENT_ID, secret).type('form').send({ grant_type: 'client_credentials' });
    // Incode may ask for a token before every webhook: successes are never counted.
    for (let i = 0; i < 40; i++) await token('198.51.100.7', WEBHOOK_CLIENT_SECRET).expect(200);
    for (let i = 0; i < 30; i++) expect((await token('203.0.113.66', `guess-${i}`).expect(401)).body.code).toBe('INVALID_CLIENT');
    expect((await token('203.0.113.66', 'guess-30').expect(429)).body.code).toBe('RATE_LIMITED');
    // A right guess among the refusals earns nothing.
    const right = await token('203.0.113.66', WEBHOOK_CLIENT_SECRET).expect(429);
    expect(right.body.code).toBe('RATE_LIMITED');
    expect(right.body).not.toHaveProperty('access_token');
    expect(Number(right.headers['retry-after'])).toBeGreaterThan(0);
    // What is left of the minute the failures were counted in, not a fixed minute.
    expect(Number(right.headers['retry-after'])).toBeLessThanOrEqual(60);
    // Incode's own network is not locked out by someone else's guessing.
    expect((await token('198.51.100.7', WEBHOOK_CLIENT_SECRET).expect(200)).body.token_type).toBe('Bearer');
  });
});

describeWith('redis', 'rate limits shared through Redis', () => {
  // A dedicated database index and a per-run client address keep this run's keys apart from anything else.
  const redisUrl = () => {
    const u = new URL(services.redis);
    u.pathname = '/5';
    return u.toString();
  };
  const runIp = `10.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${1 + (randomBytes(1)[0] % 250)}`;
  let emu: Running<EmulatorApp>;
  let redis: Redis;
  const children: Array<{ stop: () => Promise<void> }> = [];

  beforeAll(async () => {
    emu = await startEmulator();
    redis = new Redis(redisUrl(), { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    await Promise.all(children.map((c) => c.stop()));
    const keys = await redis.keys(`incode-broker:rl:*${runIp}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await emu.close();
  });

  it('RedisRateCounter counts atomically per key with an expiring window under its own prefix', async () => {
    const prefix = `test:${randomBytes(6).toString('hex')}:`;
    const a = new RedisRateCounter(new Redis(redisUrl()), prefix);
    const b = new RedisRateCounter(new Redis(redisUrl()), prefix);
    try {
      // max 0: every hit is over the limit, so each answer reports the count it reached.
      const hits = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).hitAll([{ key: 'k', max: 0 }], 5000)));
      expect(hits.map((h) => h!.count).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      for (const h of hits) expect(h!.resetMs).toBeGreaterThan(0);
      // Within its limit a hit answers null; the key order is kept and later keys are not charged once one is over.
      expect(await a.hitAll([{ key: 'fresh', max: 3 }], 5000)).toBeNull();
      expect(await a.hitAll([{ key: 'k', max: 1 }, { key: 'fresh', max: 3 }], 5000)).toMatchObject({ index: 0 });
      expect(await redis.get(`${prefix}fresh`)).toBe('1');
      // peek reads the shared count without adding to it.
      const counts = async (key: string) => (await b.peek(key, 5000)).count;
      expect([await counts('fresh'), await counts('fresh'), await counts('never')]).toEqual([1, 1, 0]);
      const fresh = await b.peek('fresh', 5000);
      expect(fresh.resetMs).toBeGreaterThan(0);
      expect(fresh.resetMs).toBeLessThanOrEqual(5000);
      expect((await b.peek('never', 5000)).resetMs).toBe(5000);
      const ttl = await redis.pttl(`${prefix}k`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(5000);
    } finally {
      await redis.del(`${prefix}k`, `${prefix}fresh`);
      await a.close();
      await b.close();
    }
  });

  it('RedisRateCounter answers each request of one event-loop turn as if it had run alone, in arrival order', async () => {
    const prefix = `test:${randomBytes(6).toString('hex')}:`;
    const c = new RedisRateCounter(new Redis(redisUrl()), prefix);
    try {
      // All issued in one turn, so they travel in one script call (and 300 > the cap of one call: two calls).
      const many = Array.from({ length: 300 }, () => c.hitAll([{ key: 'burst', max: 250 }], 5000));
      const mixed = [
        c.hitAll([{ key: 'x', max: 1 }, { key: 'g', max: 10 }], 5000),
        c.hitAll([{ key: 'x', max: 1 }, { key: 'g', max: 10 }], 5000),
        c.hitAll([{ key: 'y', max: 5 }, { key: 'g', max: 1 }], 5000),
        c.hitAll([{ key: 'other-window', max: 0 }], 60_000),
      ];
      const [burst, results] = await Promise.all([Promise.all(many), Promise.all(mixed)]);
      expect(burst.filter((r) => r === null)).toHaveLength(250);
      expect(burst.slice(250).map((r) => r?.count)).toEqual(Array.from({ length: 50 }, (_, i) => 251 + i));
      // The second request goes over x and so does not charge g; the third is then the second hit on g.
      expect(results[0]).toBeNull();
      expect(results[1]).toMatchObject({ index: 0, count: 2 });
      expect(results[2]).toMatchObject({ index: 1, count: 2 });
      expect(results[3]).toMatchObject({ index: 0, count: 1 });
      expect(await redis.get(`${prefix}g`)).toBe('2');
      const ttl = await redis.pttl(`${prefix}other-window`);
      expect(ttl).toBeGreaterThan(5000);
    } finally {
      await redis.del(`${prefix}burst`, `${prefix}x`, `${prefix}y`, `${prefix}g`, `${prefix}other-window`);
      await c.close();
    }
  });

  it('two broker processes on one Redis enforce ONE per-IP limit together', async () => {
    const env = brokerEnv(emu.url, { REDIS_URL: redisUrl(), RATE_LIMIT_PER_IP: '10', RATE_LIMIT_WINDOW_MS: '60000', TRUST_PROXY_HOPS: '1', RESULTS_MODE: 'webhook', LOG_LEVEL: 'warn' });
    // Every process that started is stopped in afterAll, even when the other failed to.
    const started = await Promise.allSettled([startBrokerProcess(env), startBrokerProcess(env)]);
    for (const r of started) if (r.status === 'fulfilled') children.push(r.value);
    const [one, two] = started.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await post(i % 2 ? two.url : one.url, runIp);
      statuses.push(res.status);
      if (res.status === 429) {
        expect(res.body.code).toBe('RATE_LIMITED');
        expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(10);
    // Both processes served some of the ten and refused some of the rest.
    expect(statuses.slice(0, 10).every((s) => s === 200)).toBe(true);
    // The shared counter lives in Redis.
    const keys = await redis.keys(`incode-broker:rl:ip:${runIp}`);
    expect(keys).toHaveLength(1);
    expect(Number(await redis.get(keys[0]))).toBe(20);
    // Another client address behind the same proxy is unaffected on either process.
    await post(one.url, `${runIp.split('.').slice(0, 3).join('.')}.251`).expect(200);
    await redis.del(`incode-broker:rl:ip:${runIp.split('.').slice(0, 3).join('.')}.251`);
  }, 60_000);

  it('counts a parallel burst of wrong guesses at the webhook token endpoint one by one through the shared counter; the right secret after it is refused', async () => {
    const b = await startBroker(brokerEnv(emu.url, { REDIS_URL: redisUrl(), TRUST_PROXY_HOPS: '1', RESULTS_MODE: 'webhook' }), { runWorker: false });
    const guesser = `${runIp.split('.').slice(0, 3).join('.')}.252`;
    // 100 connections opened first, so the guesses arrive together.
    const pool = new Pool(b.url, { connections: 100, pipelining: 1 });
    const token = (secret: string) =>
      pool
        .request({
          method: 'POST',
          path: '/webhooks/incode/token',
          headers: { 'x-forwarded-for': guesser, authorization: `Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=client_credentials',
        })
        .then(async (r) => ({ status: r.statusCode, body: (await r.body.json()) as { code?: string; access_token?: string } }));
    try {
      await Promise.all(Array.from({ length: 100 }, () => pool.request({ method: 'GET', path: '/healthz' }).then((r) => r.body.dump())));
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => token(`guess-${i}`)));
      expect(answers.filter((a) => a.status === 401)).toHaveLength(30);
      expect(answers.filter((a) => a.status === 429)).toHaveLength(70);
      const right = await token(WEBHOOK_CLIENT_SECRET);
      expect([right.status, right.body.code, right.body.access_token]).toEqual([429, 'RATE_LIMITED', undefined]);
    } finally {
      await pool.close();
      await redis.del(`incode-broker:rl:whtoken:${guesser}`);
      await b.close();
    }
  });
});
