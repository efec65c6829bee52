/**
 * `falcon-native serve PRESET`: listens at once (GET /health answers 503 while the model loads), logs
 * one JSON line per finished request on stdout, and on SIGTERM or SIGINT stops accepting, lets running
 * requests finish within the grace period, cancels the rest and exits 0 (a second signal exits at once).
 */
import path from "node:path";
import { parseArgs } from "node:util";

import { FalconCausalLM } from "../causal-lm.js";
import { deviceOption, dtypeOption, nonNegativeInteger, positiveInteger, UsageError } from "../cli-args.js";
import { KV_CACHE_DTYPES, type EngineOptions, type KvCacheDType } from "../engine/engine.js";
import { setNumThreads } from "../runtime.js";
import { createServer } from "./server.js";

export const SERVE_HELP = `serve:
  PRESET                    keras-hub preset, Hugging Face checkpoint directory, built-in name, hf:// handle
                            (it needs a tokenizer)
  --host HOST               address to listen on (default 127.0.0.1: this machine only)
  --port N                  port (default 8080; 0 picks a free one)
  --api-key KEY             require "Authorization: Bearer KEY" on /v1/* (default: env FALCON_API_KEY, else none)
  --model-name NAME         the model id clients send as "model" (default: the preset directory's name)
  --dtype TYPE              weights dtype (default: the preset's)
  --device NAME             auto | cpu | cuda | cuda:N (default auto: a GPU when one is usable)
  --kv-cache-bytes N        bytes of the paged KV cache (default: half the device's free memory, at most what
                            --max-sequences full contexts need)
  --kv-cache-dtype TYPE     float32 | bfloat16 | float16 (default float32)
  --max-batch-tokens N      tokens one engine step computes at most (default 512)
  --max-sequences N         sequences running at once (default min(64, --max-batch-tokens))
  --max-queue N             sequences waiting beyond those before requests get 429 (default 256)
  --threads N               worker threads (default: all cores, or FALCON_NUM_THREADS)
  --grace-seconds S         on SIGTERM/SIGINT, how long running requests may finish (default 30)
  --no-prefix-caching       never reuse KV blocks of earlier requests with the same leading tokens
  Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics.
  Logs: one JSON line per finished request on stdout; "listening on URL" on stderr.
`;

export const SERVE_EXAMPLES = `  falcon-native serve ./falcon-7b-instruct --port 8080 --dtype bfloat16 --max-sequences 16
`;

export async function serveCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      host: { type: "string" }, port: { type: "string" }, "api-key": { type: "string" }, "model-name": { type: "string" },
      dtype: { type: "string" }, device: { type: "string" }, "kv-cache-bytes": { type: "string" }, "kv-cache-dtype": { type: "string" },
      "max-batch-tokens": { type: "string" }, "max-sequences": { type: "string" }, "max-queue": { type: "string" },
      threads: { type: "string" }, "grace-seconds": { type: "string" }, "no-prefix-caching": { type: "boolean" },
    },
  });
  if (positionals.length !== 1) throw new UsageError("serve takes one PRESET: falcon-native serve ./falcon-7b-instruct");
  const preset = positionals[0]!;
  const engine: EngineOptions = {};
  if (values["kv-cache-bytes"] !== undefined) engine.kvCacheBytes = positiveInteger(values["kv-cache-bytes"], 1, "--kv-cache-bytes");
  if (values["max-batch-tokens"] !== undefined) engine.maxBatchTokens = positiveInteger(values["max-batch-tokens"], 1, "--max-batch-tokens");
  if (values["max-sequences"] !== undefined) engine.maxSequences = positiveInteger(values["max-sequences"], 1, "--max-sequences");
  if (values["no-prefix-caching"]) engine.prefixCaching = false;
  const kvDtype = values["kv-cache-dtype"];
  if (kvDtype !== undefined) {
    if (!KV_CACHE_DTYPES.includes(kvDtype as KvCacheDType)) throw new UsageError(`--kv-cache-dtype must be one of ${KV_CACHE_DTYPES.join(", ")}, got "${kvDtype}"`);
    engine.kvCacheDtype = kvDtype as KvCacheDType;
  }
  const port = values.port === undefined ? 8080 : nonNegativeInteger(values.port, "--port");
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const graceSeconds = values["grace-seconds"] === undefined ? 30 : nonNegativeInteger(values["grace-seconds"], "--grace-seconds");
  const dtype = dtypeOption(values.dtype);
  const device = deviceOption(values.device);
  if (values.threads !== undefined) setNumThreads(positiveInteger(values.threads, 1, "--threads"));
  const apiKey = values["api-key"] ?? (process.env["FALCON_API_KEY"] || undefined);
  const modelName = values["model-name"] ?? (path.basename(path.resolve(preset)) || "falcon");

  const loading = FalconCausalLM.fromPreset(preset, { dtype, device });
  const server = createServer(loading, {
    engine, modelName,
    ...(apiKey === undefined ? {} : { apiKey }),
    ...(values["max-queue"] === undefined ? {} : { maxQueue: nonNegativeInteger(values["max-queue"], "--max-queue") }),
    requestLog: (entry) => process.stdout.write(`${JSON.stringify(entry)}\n`),
  });
  const stopped = new Promise<string>((resolve) => {
    const onSignal = (signal: string) => {
      process.once("SIGINT", () => process.exit(130));
      process.once("SIGTERM", () => process.exit(143));
      resolve(signal);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
  });
  const { url } = await server.listen({ host: values.host ?? "127.0.0.1", port });
  process.stderr.write(`falcon-native serve: listening on ${url} (model "${modelName}" loading)\n`);
  const outcome = await Promise.race([
    server.ready.then(() => "ready", (error: unknown) => error),
    stopped,
  ]);
  if (outcome === "ready") {
    process.stderr.write(`falcon-native serve: ready\n`);
  } else if (typeof outcome !== "string") {
    await server.close({ graceMs: 0 });
    throw outcome;
  }
  const signal = outcome === "ready" ? await stopped : outcome;
  process.stderr.write(`falcon-native serve: ${signal}: finishing running requests (up to ${graceSeconds} s)\n`);
  await server.close({ graceMs: graceSeconds * 1000 });
  (await loading.catch(() => null))?.dispose();
  process.stderr.write("falcon-native serve: stopped\n");
}
