// Decorates the app with the Incode client and the executive token provider; closes the pool on close.
import fp from 'fastify-plugin';
import type { Dispatcher } from 'undici';
import type { Config } from '../config';
import { IncodeClient } from '../incode/client';
import { ExecutiveTokenProvider } from '../incode/executive-token';

declare module 'fastify' {
  interface FastifyInstance {
    incode: IncodeClient;
    executiveTokens: ExecutiveTokenProvider;
  }
}

const CIRCUIT_VALUE = { closed: 0, 'half-open': 1, open: 2 } as const;

export default fp<{ config: Config; apiUrl: () => string; dispatcher?: Dispatcher }>(
  async (app, opts) => {
    const { config } = opts;
    let client: IncodeClient | null = null;
    let tokens: ExecutiveTokenProvider | null = null;
    // Created on first use: in sandbox mode the upstream URL is known only once the server listens.
    const get = () => {
      if (!client) {
        client = new IncodeClient({
          baseUrl: opts.apiUrl(),
          apiKey: config.incode.apiKey,
          timeoutMs: config.incode.timeoutMs,
          connectTimeoutMs: config.incode.connectTimeoutMs,
          connections: config.incode.poolConnections,
          maxRetries: config.incode.maxRetries,
          maxConcurrency: config.incode.maxConcurrency,
          circuit: config.circuit,
          dispatcher: opts.dispatcher,
          onCall: (operation, outcome, seconds) => app.metrics.incodeDuration.observe({ operation, outcome }, seconds),
          onCircuitChange: (group, state) => {
            app.metrics.circuitState.set({ group }, CIRCUIT_VALUE[state]);
            app.log.warn({ group, state }, 'incode circuit changed');
          },
        });
      }
      return client;
    };
    app.decorate('incode', { getter: get });
    app.decorate('executiveTokens', {
      getter: () => {
        if (!tokens) {
          const { executiveEmail: email, executivePassword: password } = config.incode;
          tokens = new ExecutiveTokenProvider(get(), email && password ? { email, password } : undefined);
        }
        return tokens;
      },
    });
    app.addHook('onClose', async () => {
      await client?.close();
    });
  },
  { name: 'incode', dependencies: ['metrics'] },
);
