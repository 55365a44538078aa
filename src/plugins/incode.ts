// Decorates the app with the Incode client and the executive token provider; closes the pool on close.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import { IncodeClient, OPERATION_GROUPS, incodeClientOptions } from '../incode/client';
import { ExecutiveTokenProvider } from '../incode/executive-token';

declare module 'fastify' {
  interface FastifyInstance {
    incode: IncodeClient;
    executiveTokens: ExecutiveTokenProvider;
  }
}

const CIRCUIT_VALUE = { closed: 0, 'half-open': 1, open: 2 } as const;

export default fp<{ config: Config }>(
  async (app, opts) => {
    const { config } = opts;
    const client = new IncodeClient({
      ...incodeClientOptions(config, config.incode.apiUrl),
      onCall: (operation, outcome, seconds) => app.metrics.incodeDuration.observe({ operation, outcome }, seconds),
      onCircuitRejection: (operation) => app.metrics.incodeCircuitRejections.inc({ operation }),
      onCircuitChange: (group, state) => {
        app.metrics.circuitTransitions.inc({ group, to: state });
        app.log.warn({ group, state }, 'incode circuit changed');
      },
    });
    // An open circuit whose pause is over is reported half-open: its next call goes, as the probe.
    app.metrics.sources.circuitStates = () =>
      OPERATION_GROUPS.map((group) => {
        const state = client.circuitState(group);
        return [group, state === 'open' && client.circuitWait(group) === 0 ? CIRCUIT_VALUE['half-open'] : CIRCUIT_VALUE[state]];
      });
    app.decorate('incode', client);
    app.decorate(
      'executiveTokens',
      ExecutiveTokenProvider.fromConfig(client, config, (code) =>
        app.log.warn({ code }, 'executive login failed (a token already held, if any, still serves until it expires): check INCODE_EXECUTIVE_EMAIL and INCODE_EXECUTIVE_PASSWORD'),
      ),
    );
    app.addHook('onClose', async () => client.close());
  },
  { name: 'incode', dependencies: ['metrics'] },
);
