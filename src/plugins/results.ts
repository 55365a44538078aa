// Decorates the app with the results pipeline and runs its job worker and polling reconciler.
import fp from 'fastify-plugin';
import type { Config } from '../config';
import type { ResultsPipeline } from '../results/pipeline';
import { createResultsRuntime } from '../results/runtime';
import { STOP_WIND_DOWN_MS, settledWithin } from '../util/settle';
import { KeyRotation } from '../store/rekey';
import { sweepLimit } from '../store/rows';
import type { JobWorker } from '../results/worker';
import { loggedError } from '../logging';

declare module 'fastify' {
  interface FastifyInstance {
    results: ResultsPipeline;
    worker: JobWorker;
  }
}

export default fp<{ config: Config; runWorker?: boolean }>(
  async (app, opts) => {
    const { config } = opts;
    const { pipeline, worker } = createResultsRuntime({
      store: app.store,
      incode: app.incode,
      executiveTokens: app.executiveTokens,
      config,
      metrics: app.metrics,
      log: app.log,
    });
    app.decorate('results', pipeline);
    app.decorate('worker', worker);

    app.metrics.sources.jobCounts = () => app.store.countJobs({ done: false });

    let pollTimer: NodeJS.Timeout | null = null;
    let purgeTimer: NodeJS.Timeout | null = null;
    // The poll and the sweep running now, so that shutdown can wait for them before the store closes.
    let polling: Promise<void> | null = null;
    let sweeping: Promise<void> | null = null;
    const stopSweep = new AbortController();
    const pollTick = () => {
      polling ??= pipeline
        .pollDue()
        .then(
          () => undefined,
          (err: unknown) => app.log.error({ err: loggedError(err) }, 'polling failed'),
        )
        .finally(() => (polling = null));
    };
    // More than one DATA_ENCRYPTION_KEY listed means a rotation: after the retention sweep, with a budget of its own,
    // the sweep re-encrypts under the first key what is still under another, until a pass finds nothing left.
    // With a single key there is nothing to move, but one pass at start checks that no stored value is under a key
    // taken off the list too early (the last step of a rotation, where that mistake is made): its reads would fail.
    // A key leaves the list only at a restart, so once is enough.
    const single = config.encryption.keys.length === 1;
    const rotation = new KeyRotation(app.store);
    let checked = false;
    const rotate = async () => {
      if (single && checked) return;
      try {
        const passes = await rotation.run(sweepLimit(stopSweep.signal), (b) => app.metrics.reencrypted.inc(b.reencrypted));
        const last = passes.at(-1);
        if (!last) return;
        checked = true;
        app.metrics.oldKeyValues.set(last.found);
        const keyId = config.encryption.keys[0].id;
        if (!single) app.log.info({ passes, keyId }, 'key rotation: re-encryption pass complete');
        if (last.unreadable)
          app.log.warn(
            { unreadable: last.unreadable, keyId, missingKeyIds: last.missingKeyIds ?? [] },
            'key rotation: stored values are under keys no longer configured and cannot be read: list those keys in DATA_ENCRYPTION_KEY again (after the first)',
          );
        if (last.found === 0 && !single) {
          const unused = config.encryption.keys.slice(1).map((k) => k.id);
          app.log.info({ keyId, unused }, 'key rotation: every stored value is under the first key; no stored value needs the others');
        }
      } catch (err) {
        // The walk goes on from where it was at the next sweep.
        app.log.error({ err: loggedError(err) }, 'key rotation failed');
      }
    };
    const purge = () => {
      sweeping ??= pipeline
        .followUpDeadLetters(Date.now(), stopSweep.signal)
        .catch((err: unknown) => app.log.error({ err: loggedError(err) }, 'following up dead-lettered jobs failed'))
        .then(() => app.store.purgeExpired(Date.now() - config.retentionDays * 86_400_000, Date.now(), stopSweep.signal, config.retentionDeleteAtIncode))
        .then(
          (n) => {
            if (!n) return;
            app.log.info({ erased: n, deleteAtIncode: config.retentionDeleteAtIncode }, 'retention purge');
            // Their deletions at Incode are queued: the worker takes them now rather than at its next idle poll.
            if (config.retentionDeleteAtIncode) worker.kick();
          },
          (err: unknown) => app.log.error({ err: loggedError(err) }, 'retention purge failed'),
        )
        .then(rotate)
        .then(() => app.store.truncateLog())
        .then(
          (done) => {
            if (!done) app.log.info('the database log was not truncated (another connection was using it); the next sweep tries again');
          },
          (err: unknown) => app.log.error({ err: loggedError(err) }, 'truncating the database log failed'),
        )
        .finally(() => (sweeping = null));
    };

    if (opts.runWorker !== false) {
      app.addHook('onReady', async () => {
        worker.start();
        if (config.results.mode !== 'webhook') {
          pollTimer = setInterval(pollTick, Math.min(1000, config.results.pollIntervalMs));
          pollTimer.unref();
        }
        purge();
        purgeTimer = setInterval(purge, 3_600_000);
        purgeTimer.unref();
      });
    }
    // Runs before the store closes (hooks close in reverse order of registration).
    app.addHook('preClose', async () => {
      if (pollTimer) clearInterval(pollTimer);
      if (purgeTimer) clearInterval(purgeTimer);
      // The sweep stops after its current batch; both finish their store calls before the store closes.
      stopSweep.abort();
      // Bounded like the jobs: a slow database must not hold shutdown past its budget (the store closing then fails them).
      await Promise.all([worker.stop(config.shutdownGraceMs), settledWithin([polling, sweeping].filter((p) => p !== null), config.shutdownGraceMs + STOP_WIND_DOWN_MS)]);
    });
  },
  { name: 'results', dependencies: ['store', 'incode', 'metrics'] },
);
