/**
 * createServer(): an OpenAI-compatible HTTP server over one model's engine (Fastify). This file holds
 * what every request meets — readiness, the API key, admission (the queue bound), request logs,
 * shutdown — and the routes; the endpoints shape their answers in completions.ts and chat.ts.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer as createHttpServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";

import type { FalconCausalLM } from "../causal-lm.js";
import { ChatTemplate, renderChat, type ChatMessage } from "../chat-template.js";
import { checkEngineOptions, KV_BLOCK_TOKENS, type Engine } from "../engine/engine.js";
import { describeValue, FalconInputError } from "../errors.js";
import type { FalconTokenizer } from "../tokenizer.js";
import { handleChatCompletions } from "./chat.js";
import { handleCompletions } from "./completions.js";
import { badRequest, HttpError, toHttpError } from "./errors.js";
import type { GenerationRecord } from "./generation.js";
import { ServerMetrics } from "./metrics.js";
import { TokenizerPool } from "./tokenizer-pool.js";
import type { ModelLimits } from "./sampling.js";
import { checkServerOptions, type FalconServer, type ListenOptions, type RequestLogEntry, type ServerOptions } from "./options.js";
import { chatRequestSchema, completionRequestSchema } from "./schemas.js";

export type { FalconServer, ListenOptions, RequestLogEntry, ServerOptions } from "./options.js";

/** A request's arrival and the fields its log line reports, filled as it goes. */
interface RequestRecord {
  id: string;
  arrivedAt: number;
  logged: boolean;
  error?: string;
  generation?: GenerationRecord;
}

const requestRecords = new WeakMap<FastifyRequest, RequestRecord>();

/** The record onRequest made for `request`. */
export function recordOf(request: FastifyRequest): RequestRecord {
  let record = requestRecords.get(request);
  if (!record) requestRecords.set(request, (record = { id: "", arrivedAt: performance.now(), logged: false }));
  return record;
}

/** The longest delay setTimeout honours. */
const MAX_TIMEOUT_MS = 0x7fffffff;

/** Threads that tokenize long prompts: two let a second long prompt start while one is slow. */
const TOKENIZER_WORKERS = 2;


/** What the endpoints need to serve a request. */
export class ServingContext {
  readonly #admitted = { sequences: 0 };
  readonly #idleWaiters: (() => void)[] = [];
  readonly #deadlineListeners = new Set<() => void>();

  constructor(
    readonly lm: FalconCausalLM,
    readonly engine: Engine,
    readonly tokenizer: FalconTokenizer,
    readonly chatTemplate: ChatTemplate,
    readonly modelName: string,
    readonly limits: ModelLimits,
    readonly metrics: ServerMetrics,
    /** Sequences admitted at most: running + waiting. */
    readonly capacity: number,
  ) {
    this.tokenizers = new TokenizerPool(tokenizer, TOKENIZER_WORKERS);
  }

  /** Where long prompts are tokenized, off the event loop. */
  readonly tokenizers: TokenizerPool;

  checkModel(model: string): void {
    if (model !== this.modelName) {
      throw new HttpError(404, `The model \`${model}\` does not exist (this server serves \`${this.modelName}\`)`, "not_found_error", "model", "model_not_found");
    }
  }

  /** A prompt as the engine's token ids: text tokenized as lm.generate() does; ids checked against the vocabulary. */
  async promptIds(prompt: string | number[], param: string): Promise<Int32Array> {
    if (typeof prompt === "string") {
      if (prompt === "") throw badRequest(`${param} is empty: generation needs at least one token`, param);
      // One token past the context: a longer prompt is refused, never truncated.
      return this.lm.preprocessor.tokenizeWith(prompt, this.limits.contextLength + 1, (text, maxTokens) => this.tokenizers.encodePrefix(text, maxTokens));
    }
    const vocabulary = this.lm.backbone.getConfig().vocabularySize;
    const bad = prompt.findIndex((id) => id >= vocabulary);
    if (bad >= 0) throw badRequest(`${param}[${bad}] = ${prompt[bad]} is not a token id of this model (vocabulary ${vocabulary})`, param);
    return Int32Array.from(prompt);
  }

  renderChat(messages: readonly ChatMessage[]): string {
    return renderChat(this.chatTemplate, messages);
  }

  /** Reserves room for `sequences`, or throws 429; the returned function gives it back. */
  admit(sequences: number): () => void {
    if (sequences > this.capacity) {
      // Waiting would never help: refuse it for what it is.
      throw badRequest(`the request needs ${sequences} sequences (prompts × n); this server admits at most ${this.capacity} at once`, "n");
    }
    if (this.#admitted.sequences + sequences > this.capacity) {
      throw new HttpError(429, `the server is at capacity (${this.capacity} sequences running or queued); retry shortly`, "rate_limit_error", null, "queue_full", { "retry-after": "1" });
    }
    this.#admitted.sequences += sequences;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#admitted.sequences -= sequences;
      if (this.#admitted.sequences === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
    };
  }

  /** Settles when no request holds admitted sequences. */
  whenIdle(): Promise<void> {
    if (this.#admitted.sequences === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Calls `listener` when a shutdown's grace period ends; the returned function unregisters it. */
  onShutdownDeadline(listener: () => void): () => void {
    this.#deadlineListeners.add(listener);
    return () => this.#deadlineListeners.delete(listener);
  }

  shutdownDeadline(): void {
    for (const listener of [...this.#deadlineListeners]) listener();
  }
}

/** sha256 both sides, then a constant-time comparison: the time taken says nothing about the key. */
function keyMatches(given: string, expected: Buffer): boolean {
  return timingSafeEqual(createHash("sha256").update(given).digest(), expected);
}

/**
 * An OpenAI-compatible server for `lm` (or for the model a promise resolves to: the server can listen
 * while it loads). See ServerOptions; `listen()` starts it.
 */
export function createServer(lm: FalconCausalLM | Promise<FalconCausalLM>, options: ServerOptions = {}): FalconServer {
  const settings = checkServerOptions(options);
  const expectedKey = options.apiKey === undefined ? null : createHash("sha256").update(options.apiKey).digest();
  let context: ServingContext | null = null;
  let loadError: Error | null = null;
  let closing = false;
  const metrics = new ServerMetrics(() => context?.engine.closed === false ? context.engine.stats() : undefined);

  const ready = Promise.resolve(lm).then((model) => {
    const tokenizer = model.tokenizer;
    if (!tokenizer) throw new FalconInputError("the server needs a model with a tokenizer (its preset has none)");
    const engine = model.engine(options.engine);
    const stats = engine.stats();
    const { maxSequences } = checkEngineOptions(options.engine ?? {});
    context = new ServingContext(
      model, engine, tokenizer, chatTemplate(model, options.chatTemplate), settings.modelName,
      {
        contextLength: model.backbone.getConfig().maxPositionEmbeddings,
        kvPoolTokens: stats.kvBlocks.total * KV_BLOCK_TOKENS,
        endTokenId: model.preprocessor.endTokenId,
      },
      metrics, maxSequences + settings.maxQueue,
    );
    if (closing) void engine.close();
  });
  ready.catch((error: unknown) => {
    loadError = error instanceof Error ? error : new Error(String(error));
  });

  /** The context, or the 503 that says why there is none. */
  const serving = (): ServingContext => {
    if (closing) throw new HttpError(503, "the server is shutting down", "server_error");
    if (context) return context;
    if (loadError) throw new HttpError(503, `the model failed to load: ${loadError.message}`, "server_error");
    throw new HttpError(503, "the model is loading", "server_error");
  };

  const app: FastifyInstance = Fastify({
    logger: false,
    bodyLimit: settings.bodyLimit,
    // Our own server, so slow clients are cut within a second of their deadline (Node checks every 30 s by default).
    serverFactory: (handler) => createHttpServer({
      requestTimeout: settings.requestTimeoutMs,
      headersTimeout: settings.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, settings.requestTimeoutMs),
    }, handler),
    return503OnClosing: false,
    forceCloseConnections: "idle",
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
  });
  // Every body is JSON, whatever its content type says (curl -d sends form encoding).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string", bodyLimit: settings.bodyLimit }, app.getDefaultJsonParser("error", "error"));

  const requestIds = { next: 0 };
  app.addHook("onRequest", async (request, reply) => {
    const record = recordOf(request);
    record.id = `req-${++requestIds.next}`;
    reply.raw.once("close", () => logRequest(request, reply.raw, record));
    // Decided by the route the request reaches, never by its raw target: "/%761/completions" and
    // "http://host/v1/completions" reach /v1/completions too. Only /health and /metrics stay open.
    const route = request.routeOptions.url;
    if (route !== "/health" && route !== "/metrics") {
      if (closing) {
        reply.header("connection", "close");
        throw new HttpError(503, "the server is shutting down", "server_error");
      }
      if (expectedKey) {
        const header = request.headers.authorization;
        // The scheme is case-insensitive (RFC 9110 §11.1): some clients send "bearer".
        const given = typeof header === "string" && /^bearer /i.test(header) ? header.slice(7) : null;
        if (given === null) throw new HttpError(401, "missing API key: send the header Authorization: Bearer KEY", "authentication_error", null, "invalid_api_key");
        if (!keyMatches(given, expectedKey)) throw new HttpError(401, "incorrect API key", "authentication_error", null, "invalid_api_key");
      }
    }
  });

  const logRequest = (request: FastifyRequest, response: ServerResponse, record: RequestRecord) => {
    if (record.logged) return;
    record.logged = true;
    const status = response.statusCode;
    metrics.requests.inc({ endpoint: request.routeOptions.url ?? "unknown", status: String(status) });
    if (!options.requestLog) return;
    const entry: RequestLogEntry = {
      id: record.id, method: request.method, url: request.url, status,
      durationMs: round(performance.now() - record.arrivedAt),
    };
    const generation = record.generation;
    if (generation) {
      entry.promptTokens = generation.promptTokens;
      entry.completionTokens = generation.completionTokens;
      if (generation.firstTokenAt !== null) entry.timeToFirstTokenMs = round(generation.firstTokenAt - generation.arrivedAt);
    }
    if (record.error) entry.error = record.error;
    else if (!response.writableFinished) entry.error = "the client closed the connection";
    try {
      options.requestLog(entry);
    } catch {
      // A failing logger must not take a request (or the process) down with it.
    }
  };

  app.setErrorHandler((error, request, reply) => {
    const failure = toHttpError(error);
    recordOf(request).error = failure.message;
    void reply.code(failure.status).headers(failure.headers).send(failure.body());
  });
  app.setNotFoundHandler((request, reply) => {
    const failure = new HttpError(404, `no route ${request.method} ${request.url.split("?")[0]}`, "not_found_error", null, "not_found");
    void reply.code(404).send(failure.body());
  });

  app.get("/health", async (_request, reply) => {
    if (closing) return reply.code(503).send({ status: "shutting_down" });
    if (context) return { status: "ok" };
    if (loadError) return reply.code(503).send({ status: "error", message: loadError.message });
    return reply.code(503).send({ status: "loading" });
  });
  app.get("/metrics", async (_request, reply) => {
    const text = await metrics.registry.metrics();
    return reply.header("content-type", metrics.registry.contentType).send(text);
  });
  app.get("/v1/models", async () => {
    const ctx = serving();
    return {
      object: "list",
      data: [{ id: ctx.modelName, object: "model", created: startTime, owned_by: "falcon-native", max_model_len: ctx.limits.contextLength }],
    };
  });
  app.post("/v1/completions", { schema: { body: completionRequestSchema } }, (request, reply) => handleCompletions(serving(), request, reply));
  app.post("/v1/chat/completions", { schema: { body: chatRequestSchema } }, (request, reply) => handleChatCompletions(serving(), request, reply));
  const startTime = Math.floor(Date.now() / 1000);

  let closed: Promise<void> | null = null;
  return {
    get engine() {
      return context?.engine;
    },
    ready,
    async listen(listenOptions: ListenOptions = {}) {
      const host = listenOptions.host ?? "127.0.0.1";
      await app.listen({ host, port: listenOptions.port ?? 8080 });
      const address = (app.server as Server).address() as AddressInfo;
      const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
      return { host: address.address, port: address.port, url: `http://${shown}:${address.port}` };
    },
    close({ graceMs = 30_000 }: { graceMs?: number } = {}) {
      if (typeof graceMs !== "number" || !(graceMs >= 0)) {
        return Promise.reject(new FalconInputError(`graceMs must be a non-negative number of milliseconds (Infinity: wait for every request), got ${describeValue(graceMs)}`));
      }
      closed ??= (async () => {
        closing = true;
        const server = app.server as Server;
        const stopped = app.close();
        // setTimeout fires at once past 2^31 - 1 ms: a grace period longer than that waits for every request.
        let graceTimer: NodeJS.Timeout | undefined;
        const graceOver = new Promise((resolve) => {
          if (graceMs <= MAX_TIMEOUT_MS) graceTimer = setTimeout(resolve, graceMs);
        });
        await Promise.race([context?.whenIdle(), graceOver]);
        clearTimeout(graceTimer);
        context?.shutdownDeadline();
        await context?.whenIdle();
        // A request gives its sequences back before Fastify writes its answer (the 503 of a JSON request
        // cut at the deadline): those answers are written by the end of this turn, so close after it.
        await new Promise((resolve) => setImmediate(resolve));
        server.closeAllConnections();
        await stopped;
        await ready.catch(() => undefined);
        await context?.engine.close();
        await context?.tokenizers.close();
      })();
      return closed;
    },
  };
}

/** The model's chat template, or `source` rendered with the model's special tokens. */
function chatTemplate(lm: FalconCausalLM, source: string | undefined): ChatTemplate {
  if (source === undefined) return lm.chatTemplate;
  return new ChatTemplate(source, { bosToken: lm.chatTemplate.bosToken, eosToken: lm.chatTemplate.eosToken });
}

function round(milliseconds: number): number {
  return Math.round(milliseconds * 10) / 10;
}
