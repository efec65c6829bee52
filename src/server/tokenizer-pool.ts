/**
 * Tokenization off the event loop. A short text is tokenized in place (less work than a message);
 * a longer one goes to one of a few worker threads (tokenizer-worker.ts), so a prompt that is slow
 * to tokenize holds up only itself, never the streams and health checks the event loop serves.
 */
import { Worker } from "node:worker_threads";

import { FalconError } from "../errors.js";
import type { FalconTokenizer } from "../tokenizer.js";

export interface TokenizeRequest {
  id: number;
  text: string;
  maxTokens: number;
}

export type TokenizeResponse = { id: number; ids: Int32Array } | { id: number; error: string };

/** Texts up to this many UTF-16 units are tokenized in place: at worst (one boundary-less run) ~30 ms. */
const INLINE_CHARACTERS = 2048;
const WORKER_URL = new URL("./tokenizer-worker.js", import.meta.url);

interface Pending {
  resolve: (ids: Int32Array) => void;
  reject: (error: Error) => void;
}

/** One worker and the requests it has not answered. */
class TokenizerWorker {
  readonly pending = new Map<number, Pending>();
  readonly worker: Worker;

  constructor(definition: unknown, onGone: (worker: TokenizerWorker) => void) {
    // The host's node flags (--input-type, --eval…) are not the worker's to inherit.
    this.worker = new Worker(WORKER_URL, { workerData: definition, execArgv: [] });
    this.worker.unref();
    this.worker.on("message", (response: TokenizeResponse) => {
      const pending = this.pending.get(response.id);
      if (!pending) return;
      this.pending.delete(response.id);
      if ("ids" in response) pending.resolve(response.ids);
      else pending.reject(new FalconError(`tokenization failed: ${response.error}`));
    });
    const fail = (reason: string) => {
      onGone(this);
      for (const pending of this.pending.values()) pending.reject(new FalconError(reason));
      this.pending.clear();
    };
    this.worker.on("error", (error) => fail(`the tokenizer worker failed (${error.message})`));
    this.worker.on("exit", (code) => fail(`the tokenizer worker exited (code ${code})`));
  }
}

export class TokenizerPool {
  readonly #tokenizer: FalconTokenizer;
  readonly #size: number;
  readonly #workers: TokenizerWorker[] = [];
  #nextId = 1;

  constructor(tokenizer: FalconTokenizer, size: number) {
    this.#tokenizer = tokenizer;
    this.#size = size;
  }

  /** tokenizer.encodePrefix(text, maxTokens), in a worker when the text is long. */
  encodePrefix(text: string, maxTokens: number): Promise<Int32Array> {
    if (text.length <= INLINE_CHARACTERS) return Promise.resolve(this.#tokenizer.encodePrefix(text, maxTokens));
    const worker = this.#leastBusy();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      worker.pending.set(id, { resolve, reject });
      worker.worker.postMessage({ id, text, maxTokens } satisfies TokenizeRequest);
    });
  }

  /** Ends the workers; requests still waiting reject. */
  async close(): Promise<void> {
    await Promise.all(this.#workers.splice(0).map((worker) => worker.worker.terminate()));
  }

  /** Started on first need, up to the pool's size; one that died is replaced. */
  #leastBusy(): TokenizerWorker {
    const idle = this.#workers.find((worker) => worker.pending.size === 0);
    if (idle) return idle;
    if (this.#workers.length < this.#size) {
      const worker = new TokenizerWorker(this.#tokenizer.definition, (gone) => {
        const index = this.#workers.indexOf(gone);
        if (index >= 0) this.#workers.splice(index, 1);
      });
      this.#workers.push(worker);
      return worker;
    }
    return this.#workers.reduce((best, worker) => (worker.pending.size < best.pending.size ? worker : best));
  }
}
