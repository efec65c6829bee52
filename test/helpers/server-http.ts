/**
 * HTTP helpers for the server tests: OpenAI error-shape assertions, server-sent event parsing, and raw
 * sockets for what fetch cannot do (send a request slowly, drop a connection at a chosen moment).
 */
import assert from "node:assert/strict";
import net from "node:net";

import type { Engine } from "../../src/engine/engine.js";
import { waitFor } from "./fake-engine.js";

export interface OpenAIError {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** OpenAI's error type for each status the server answers with. */
const ERROR_TYPES: Readonly<Record<number, string>> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
  503: "server_error",
};

/**
 * Asserts `response` is an error of `status` in OpenAI's shape, `{"error": {message, type, param, code}}`
 * and nothing else, with the type of its status and, where given, the expected param and code.
 */
export async function expectOpenAIError(
  response: Response, status: number, expected: { param?: string | null; code?: string | null } = {},
): Promise<OpenAIError> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, text);
  return checkErrorBody(JSON.parse(text), status, expected, text);
}

/** The checks of expectOpenAIError on a parsed body (a stream's error event has the same shape). */
export function checkErrorBody(body: unknown, status: number, expected: { param?: string | null; code?: string | null } = {}, shown = JSON.stringify(body)): OpenAIError {
  assert.ok(typeof body === "object" && body !== null, shown);
  assert.deepEqual(Object.keys(body), ["error"], shown);
  const error = (body as { error: OpenAIError }).error;
  assert.deepEqual(Object.keys(error).sort(), ["code", "message", "param", "type"], shown);
  assert.equal(typeof error.message, "string", shown);
  assert.ok(error.message.length > 0, shown);
  assert.equal(error.type, ERROR_TYPES[status], shown);
  assert.ok(error.param === null || typeof error.param === "string", shown);
  assert.ok(error.code === null || typeof error.code === "string", shown);
  if ("param" in expected) assert.equal(error.param, expected.param, shown);
  if ("code" in expected) assert.equal(error.code, expected.code, shown);
  return error;
}

/** The `data:` payloads of a server-sent event stream, in order (`[DONE]` included as is). */
export function sseData(text: string): string[] {
  assert.ok(text.endsWith("\n\n"), `a stream ends with a blank line: ${JSON.stringify(text.slice(-200))}`);
  return text.slice(0, -2).split("\n\n").map((event) => {
    assert.ok(event.startsWith("data: "), `an event is one data line: ${JSON.stringify(event)}`);
    return event.slice("data: ".length);
  });
}

// The test servers' random model samples at temperature 1, where any token, the end token too, may come
// next: ignore_eos (vLLM's) leaves max_tokens the only end, so "length" is the one finish reason to expect.

/** A 4-token /v1/completions body for the model served as "falcon", with `fields` added or replaced. */
export const completionBody = (fields: Record<string, unknown> = {}) =>
  ({ model: "falcon", prompt: "The eagle", max_tokens: 4, ignore_eos: true, ...fields });

/** A 4-token /v1/chat/completions body for the model served as "falcon", with `fields` added or replaced. */
export const chatBody = (fields: Record<string, unknown> = {}) =>
  ({ model: "falcon", messages: [{ role: "user", content: "Hello" }], max_tokens: 4, ignore_eos: true, ...fields });

/** A POST of `body` (JSON-encoded unless a string) to `url`. */
export function postJson(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

/** The bytes of an HTTP/1.1 POST of a JSON body (for raw sockets). */
export function rawPost(path: string, body: string, headers: Record<string, string> = {}): string {
  const lines = [`POST ${path} HTTP/1.1`, "Host: 127.0.0.1", "Content-Type: application/json", `Content-Length: ${Buffer.byteLength(body)}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

/** A raw TCP connection to the server, with everything it received so far. */
export class RawClient {
  readonly socket: net.Socket;
  received = "";
  readonly closed: Promise<void>;
  readonly #waiters: (() => void)[] = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (data: string) => {
      this.received += data;
      for (const wake of this.#waiters.splice(0)) wake();
    });
    // A reset from the server (it cut us off) is an ordinary end here.
    socket.on("error", () => undefined);
    this.closed = new Promise((resolve) => socket.once("close", () => {
      for (const wake of this.#waiters.splice(0)) wake();
      resolve();
    }));
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      socket.once("connect", () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  write(data: string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (error) => (error ? reject(error) : resolve())));
  }

  /** Waits until what was received contains `text` (false if the connection closed first). */
  async waitFor(text: string): Promise<boolean> {
    while (!this.received.includes(text)) {
      if (this.socket.destroyed || this.socket.readableEnded) return false;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return true;
  }

  /** Drops the connection at once (a reset: no goodbye). */
  destroy(): void {
    this.socket.resetAndDestroy();
  }
}

/** Waits until `engine` holds nothing for any request: no sequence running or waiting, no KV block in use. */
export function untilEngineIdle(engine: Engine, timeoutMs = 5000): Promise<void> {
  return waitFor(() => {
    const { running, waiting, kvBlocks } = engine.stats();
    return running === 0 && waiting === 0 && kvBlocks.used === 0;
  }, "the engine to hold no sequence and no KV block", timeoutMs);
}
