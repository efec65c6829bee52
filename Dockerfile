# syntax=docker/dockerfile:1
# falcon-native serve in a container: the addon and the TypeScript are built in the first stage, the
# second holds only what the server runs (production dependencies, dist/src, the .node file).
#
#   docker build -t falcon-native .
#   docker run --rm -p 8080:8080 -v /path/to/falcon-rw-1b:/models/preset:ro falcon-native
#   docker run --rm -p 8080:8080 -v /path/to/ckpt:/models/preset:ro -e FALCON_API_KEY=secret \
#     falcon-native --dtype bfloat16 --max-sequences 16       # extra arguments go to `serve`
#
# FALCON_PRESET may be any PRESET `serve` takes (an hf:// handle downloads into HF_HOME: mount a volume there).

FROM node:20-bookworm AS build
# The full bookworm image has python3, make and g++ for node-gyp; listed so the build says what it needs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, so a source change does not reinstall them. No dependency has an install
# script; the package's own (the addon) and prepare (the TypeScript) run below, once sources are here.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY binding.gyp tsconfig.json tsconfig.build.json ./
COPY native ./native
COPY scripts ./scripts
COPY src ./src
RUN npm run build:native \
 && npm run prepare \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FALCON_PRESET=/models/preset \
    FALCON_PORT=8080 \
    HF_HOME=/home/node/.cache/huggingface
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/build/Release/falcon_native.node ./build/Release/falcon_native.node
USER node
EXPOSE 8080
# /health is 503 while the model loads and 200 once it serves; the start period covers loading.
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.FALCON_PORT}/health`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# exec: node is PID 1 and gets SIGTERM itself (serve closes gracefully on it, then exits 0).
ENTRYPOINT ["/bin/sh", "-c", "exec node /app/dist/src/cli.js serve \"$FALCON_PRESET\" --host 0.0.0.0 --port \"$FALCON_PORT\" \"$@\"", "falcon-native"]
CMD []
