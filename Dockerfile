# Multi-stage build: compile with dev dependencies, ship only production ones, run as a non-root user.
# Node 22 (maintained LTS; Node 20 reached its end of life in April 2026). The test suite runs on Node 20.20 on the
# project's CI machines, where no newer Node can be installed; every dependency supports both (README, Deployment).
# Pin by digest in your own registry (node:22-bookworm-slim@sha256:...) for reproducible images.
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# better-sqlite3 builds its native addon from source (below).
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# No install scripts but better-sqlite3's: the postinstall fetches the Web SDK for the sandbox demo, which this image
# does not ship (an air-gapped build would wait for it to time out). The addon is compiled here, against the image's
# own Node headers: no prebuilt binary downloaded unchecked from GitHub, no headers from nodejs.org.
RUN npm ci --ignore-scripts --no-audit --no-fund \
    && npm rebuild better-sqlite3 --build-from-source --nodedir=/usr/local
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Of the addon's build only the addon itself is needed at run time: its sources, the compiler's intermediates, the
# static SQLite library and the test extension are not (tens of MB when it compiled).
RUN npm run build && npm prune --omit=dev \
    && mv node_modules/better-sqlite3/build/Release/better_sqlite3.node /tmp/ \
    && rm -rf node_modules/better-sqlite3/build node_modules/better-sqlite3/deps node_modules/better-sqlite3/src \
    && mkdir -p node_modules/better-sqlite3/build/Release \
    && mv /tmp/better_sqlite3.node node_modules/better-sqlite3/build/Release/

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:/data/broker.db
WORKDIR /app
# A numeric user, so Kubernetes' runAsNonRoot can verify it and a volume's fsGroup can match it.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin broker \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build --chown=root:root /app/node_modules ./node_modules
# dist holds the compiled code and the web pages (npm run build copies src/web to dist/web).
COPY --from=build --chown=root:root /app/dist ./dist
COPY --chown=root:root package.json ./
# No .env is copied: configuration comes from the environment (see .env.example); .dockerignore keeps it out.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD node -e "require('http').get('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
# node directly (not npm) so SIGTERM reaches the process and graceful shutdown runs: the service installs its signal
# handlers before anything else, so even as PID 1 a stop during start-up is answered. On SIGTERM it first leaves the
# load balancer's rotation for SHUTDOWN_DELAY_MS, then drains: give the container SHUTDOWN_DELAY_MS + 2 x
# SHUTDOWN_GRACE_MS + 5 s to stop, with room (30 s at the defaults: `docker run --stop-timeout 40`, Kubernetes'
# terminationGracePeriodSeconds: 40), or it is killed mid-drain. No --enable-source-maps: it costs about 10 MB and makes
# every stack trace slow to build; the maps are in the image, so NODE_OPTIONS=--enable-source-maps turns it on to debug.
CMD ["node", "dist/server.js"]
