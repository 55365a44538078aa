// A tiny HTTP proxy in front of the emulator that records every request (method, path, headers, the start of its
// body) and how many were in flight at once: what the broker actually sent to "Incode".
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The first 4 KiB of the body, as text (images make the rest). */
  body: string;
}

export interface RecordingProxy {
  url: string;
  records: Recorded[];
  /** Requests whose path (without query) ends with suffix. */
  count: (suffix: string) => number;
  maxInflight: () => number;
  resetMax: () => void;
  close: () => Promise<void>;
}

export async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const t = new URL(target);
  const records: Recorded[] = [];
  let inflight = 0;
  let max = 0;
  const server = createServer((req, res) => {
    const record: Recorded = { method: req.method ?? '', path: req.url ?? '', headers: { ...req.headers }, body: '' };
    records.push(record);
    req.on('data', (chunk: Buffer) => {
      if (record.body.length < 4096) record.body += chunk.toString('utf8').slice(0, 4096 - record.body.length);
    });
    inflight++;
    max = Math.max(max, inflight);
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        inflight--;
      }
    };
    const up = httpRequest(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        upRes.on('end', finish);
      },
    );
    up.on('error', () => {
      finish();
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    // The broker gave up (timeout): drop the upstream request too.
    res.on('close', () => {
      finish();
      up.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    records,
    count: (suffix) => records.filter((r) => r.path.split('?')[0].endsWith(suffix)).length,
    maxInflight: () => max,
    resetMax: () => {
      max = inflight;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
