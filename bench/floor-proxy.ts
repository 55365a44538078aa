// The floor: plain node:http + one undici Pool forwarding POST /session to the emulator's /omni/start, nothing else.
import { createServer } from 'node:http';
import { Pool } from 'undici';

const port = Number(process.env.PORT);
const upstream = process.env.FLOOR_UPSTREAM ?? 'http://127.0.0.1:8080';
const apiKey = process.env.FLOOR_API_KEY ?? '';
// Same pool size as the broker's default INCODE_POOL_CONNECTIONS, so neither side is starved of sockets.
const pool = new Pool(upstream, { connections: Number(process.env.FLOOR_POOL_CONNECTIONS ?? 512), pipelining: 1 });
const upstreamHeaders = { 'x-api-key': apiKey, 'api-version': '1.0', 'content-type': 'application/json', accept: 'application/json' };

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/session') {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = chunks.length ? Buffer.concat(chunks) : Buffer.from('{}');
    pool
      .request({ method: 'POST', path: '/omni/start', headers: upstreamHeaders, body })
      .then(async (up) => {
        const text = await up.body.text();
        res.writeHead(up.statusCode, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"code":"UPSTREAM_ERROR"}');
      });
  });
});
server.keepAliveTimeout = 72_000;

const stop = () => {
  server.close();
  void pool.close().finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
server.listen(port, '127.0.0.1');
