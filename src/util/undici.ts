// The parts of undici this service uses, loaded without undici's index (which also loads fetch, WebSocket, EventSource, caches and mocks).
import type * as Undici from 'undici';

// undici's index requires its whole library at once: about 5 MB of live heap against under 2 MB for these parts.
// Every megabyte kept live costs several at peak, since V8 lets the heap grow to a multiple of what its last full GC
// kept (bench/README.md, "Memory"). These files are undici's own modules, the ones its index re-exports (pinned to
// undici 7 in package.json; test/util/undici.test.ts fails if an upgrade moves them or the service loads the index).
// Deliberately not the index's side effect either: it adds request() and the other api methods to every dispatcher,
// so code here calls dispatch(), or `request` below with the dispatcher as `this`.
/* eslint-disable @typescript-eslint/no-require-imports */
export const Pool: new (url: string | URL, options?: Undici.Pool.Options) => Dispatcher = require('undici/lib/dispatcher/pool');
export const errors: typeof Undici.errors = require('undici/lib/core/errors');
const requestOn: (this: Undici.Dispatcher, opts: Undici.Dispatcher.RequestOptions) => Promise<Undici.Dispatcher.ResponseData> = require('undici/lib/api/api-request');
const { getGlobalDispatcher }: { getGlobalDispatcher: typeof Undici.getGlobalDispatcher } = require('undici/lib/global');
/* eslint-enable @typescript-eslint/no-require-imports */

/** What a dispatcher is without the index: dispatch and close, not request(), stream() and the rest of the api. */
export type Dispatcher = Pick<Undici.Dispatcher, 'dispatch' | 'close' | 'destroy'>;
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace Dispatcher {
  export type DispatchOptions = Undici.Dispatcher.DispatchOptions;
  export type DispatchController = Undici.Dispatcher.DispatchController;
}

/** undici's top-level request(url, options): through the global dispatcher, as undici's own does. */
export function request(url: string, opts: Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path'>): Promise<Undici.Dispatcher.ResponseData> {
  const u = new URL(url);
  return requestOn.call(getGlobalDispatcher(), { ...opts, origin: u.origin, path: `${u.pathname}${u.search}` });
}
