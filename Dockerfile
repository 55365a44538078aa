# syntax=docker/dockerfile:1.7
# Multi-stage build: compile with dev dependencies, ship only production ones, run as a non-root user.

FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 builds a native addon when no prebuilt binary matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# postinstall fetches the Web SDK for the sandbox demo; it never fails the install.
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:/data/broker.db
WORKDIR /app
RUN groupadd --system broker && useradd --system --gid broker --home-dir /app --shell /usr/sbin/nologin broker \
    && mkdir -p /data && chown broker:broker /data
COPY --from=build --chown=root:root /app/node_modules ./node_modules
# dist holds the compiled code and the web pages (npm run build copies src/web to dist/web).
COPY --from=build --chown=root:root /app/dist ./dist
COPY --chown=root:root package.json ./
# No .env is copied: configuration comes from the environment (see .env.example); .dockerignore keeps it out.
USER broker
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD node -e "require('http').get('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
# node directly (not npm) so SIGTERM reaches the process and graceful shutdown runs.
CMD ["node", "--enable-source-maps", "dist/server.js"]
