/**
 * The server's options and handle types, and the check of the options: what createServer needs before
 * the HTTP stack is loaded (index.ts loads server.ts only when a server is made).
 */
import type { Engine, EngineOptions } from "../engine/engine.js";
import { describeValue, FalconInputError } from "../errors.js";

export interface ServerOptions {
  /** Bearer key every request must carry but those of /health and /metrics (open, as in vLLM and llama-server). */
  apiKey?: string;
  /** The model's id in /v1/models, which requests name in `model` (default "falcon"). */
  modelName?: string;
  /** The engine's options (KV cache size and dtype, batch limits, prefix caching). */
  engine?: EngineOptions;
  /** Sequences that may wait beyond the engine's maxSequences before requests get 429 (default 256). */
  maxQueue?: number;
  /** Largest request body in bytes (default 1 MiB); larger gets 413. */
  bodyLimit?: number;
  /** A client must send its whole request within this (default 30 000 ms), or its connection is closed. */
  requestTimeoutMs?: number;
  /** Jinja chat template for /v1/chat/completions instead of the model's own. */
  chatTemplate?: string;
  /** Called once per finished request (the CLI prints each as a JSON line). */
  requestLog?: (entry: RequestLogEntry) => void;
}

/** One request's log line. */
export interface RequestLogEntry {
  id: string;
  method: string;
  url: string;
  status: number;
  promptTokens?: number;
  completionTokens?: number;
  /** Milliseconds from arrival to the first generated token. */
  timeToFirstTokenMs?: number;
  durationMs: number;
  error?: string;
}

export interface ListenOptions {
  /** Default 127.0.0.1: loopback only unless asked. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
}

export interface FalconServer {
  /** Starts listening; the model may still be loading (then /health answers 503). */
  listen(options?: ListenOptions): Promise<{ host: string; port: number; url: string }>;
  /**
   * Stops accepting requests (new ones get 503), lets running ones finish within graceMs (default
   * 30 000), cancels the rest, closes every connection and the engine.
   */
  close(options?: { graceMs?: number }): Promise<void>;
  /** The engine, once the model is ready. */
  readonly engine: Engine | undefined;
  /** Settles when the model is ready (rejects if it failed to load). */
  readonly ready: Promise<void>;
}

const DEFAULTS = { modelName: "falcon", maxQueue: 256, bodyLimit: 1 << 20, requestTimeoutMs: 30_000 };

/** The options checked, with their defaults. */
export function checkServerOptions(options: ServerOptions): Required<Pick<ServerOptions, "modelName" | "maxQueue" | "bodyLimit" | "requestTimeoutMs">> {
  if (typeof options !== "object" || options === null) throw new FalconInputError("server options must be an object");
  const known = new Set(["apiKey", "modelName", "engine", "maxQueue", "bodyLimit", "requestTimeoutMs", "chatTemplate", "requestLog"]);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new FalconInputError(`unknown server option "${key}" (known: ${[...known].join(", ")})`);
  }
  const integer = (name: keyof typeof DEFAULTS, low: number, high: number): number => {
    const value = options[name] ?? DEFAULTS[name];
    if (typeof value !== "number" || !Number.isInteger(value) || value < low || value > high) {
      throw new FalconInputError(`${name} must be an integer in [${low}, ${high}], got ${describeValue(value)}`);
    }
    return value;
  };
  // What a client can send in a header field (visible ASCII or Latin-1, spaces inside: HTTP trims the
  // ends); any other key could never match.
  if (options.apiKey !== undefined && (typeof options.apiKey !== "string" || !/^[\x21-\x7e\x80-\xff](?:[ \x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?$/.test(options.apiKey))) {
    throw new FalconInputError("apiKey must be a non-empty string of visible ASCII or Latin-1 characters (spaces only inside)");
  }
  const modelName = options.modelName ?? DEFAULTS.modelName;
  if (typeof modelName !== "string" || modelName.length === 0 || modelName.length > 256) {
    throw new FalconInputError(`modelName must be a string of 1 to 256 characters, got ${describeValue(modelName)}`);
  }
  if (options.chatTemplate !== undefined && typeof options.chatTemplate !== "string") throw new FalconInputError("chatTemplate must be a string");
  if (options.requestLog !== undefined && typeof options.requestLog !== "function") throw new FalconInputError("requestLog must be a function");
  return {
    modelName,
    maxQueue: integer("maxQueue", 0, 1 << 20),
    bodyLimit: integer("bodyLimit", 1024, 1 << 30),
    requestTimeoutMs: integer("requestTimeoutMs", 100, 3_600_000),
  };
}
