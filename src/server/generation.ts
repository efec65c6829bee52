/**
 * One HTTP request's generation: its choices (prompts × n) run as separate engine sequences, together,
 * each chunk timed for the metrics. A failing choice cancels its siblings. The endpoints (completions.ts,
 * chat.ts) only shape what comes out of here.
 */
import type { ServerResponse } from "node:http";

import type { CompleteStreamOptions, CompletionChunk, CompletionLogprob, Engine, FinishReason } from "../engine/engine.js";
import type { FalconTokenizer } from "../tokenizer.js";
import type { ServerMetrics } from "./metrics.js";

export interface ChoiceJob {
  index: number;
  /** Which prompt of the request (choices of one prompt count its tokens once in usage). */
  promptIndex: number;
  promptIds: Int32Array;
  /** New tokens (0: the choice is only its prompt, e.g. echo with max_tokens 0; the engine ends it at once). */
  maxNewTokens: number;
  options: CompleteStreamOptions;
}

export interface ChoiceOutcome {
  index: number;
  promptIndex: number;
  text: string;
  tokenIds: number[];
  logprobs: CompletionLogprob[];
  finishReason: FinishReason;
  promptTokens: number;
}

/** A request's timings and token counts, for its log line and the metrics. */
export interface GenerationRecord {
  arrivedAt: number;
  firstTokenAt: number | null;
  promptTokens: number;
  completionTokens: number;
}

/** Runs every choice; `onChunk` sees each chunk as it arrives (a stream writes it out). */
export async function runChoices(
  engine: Engine, jobs: readonly ChoiceJob[], record: GenerationRecord, metrics: ServerMetrics, abort: AbortController,
  onChunk?: (index: number, chunk: CompletionChunk) => void,
): Promise<ChoiceOutcome[]> {
  for (const job of jobs) record.promptTokens += job.promptIds.length;
  metrics.promptTokens.inc(record.promptTokens);
  const runOne = async (job: ChoiceJob): Promise<ChoiceOutcome> => {
    const outcome: ChoiceOutcome = { index: job.index, promptIndex: job.promptIndex, text: "", tokenIds: [], logprobs: [], finishReason: "length", promptTokens: job.promptIds.length };
    let lastTokenAt: number | null = null;
    for await (const chunk of engine.completeStream(job.promptIds, {
      ...job.options, maxNewTokens: job.maxNewTokens, maxLength: job.promptIds.length + job.maxNewTokens, signal: abort.signal,
    })) {
      const now = performance.now();
      if (chunk.tokenIds.length > 0) {
        record.firstTokenAt ??= now;
        if (record.firstTokenAt === now) metrics.timeToFirstToken.observe((now - record.arrivedAt) / 1000);
        if (lastTokenAt !== null) {
          const gap = (now - lastTokenAt) / 1000 / chunk.tokenIds.length;
          for (let i = 0; i < chunk.tokenIds.length; i++) metrics.interTokenLatency.observe(gap);
        }
        lastTokenAt = now;
        record.completionTokens += chunk.tokenIds.length;
        metrics.generationTokens.inc(chunk.tokenIds.length);
      }
      outcome.text += chunk.text;
      outcome.tokenIds.push(...chunk.tokenIds);
      if (chunk.logprobs) outcome.logprobs.push(...chunk.logprobs);
      if (chunk.finishReason) outcome.finishReason = chunk.finishReason;
      onChunk?.(job.index, chunk);
    }
    return outcome;
  };
  // A failing choice cancels its siblings; all have settled before the response is shaped.
  const settled = await Promise.allSettled(jobs.map((job) => runOne(job).catch((error: unknown) => {
    abort.abort(error);
    throw error;
  })));
  const failed = settled.find((result) => result.status === "rejected");
  if (failed) throw abort.signal.aborted ? abort.signal.reason : failed.reason;
  return settled.map((result) => (result as PromiseFulfilledResult<ChoiceOutcome>).value);
}

/** A token as OpenAI's logprobs show it: its text, and its bytes (a token may end inside a character). */
export function tokenText(tokenizer: FalconTokenizer, id: number): { token: string; bytes: number[] } {
  return { token: tokenizer.decode([id]), bytes: Array.from(tokenizer.decodeBytes([id])) };
}

/** Most bytes a slow reader may leave unread before its request is cancelled. */
const MAX_UNREAD_BYTES = 1 << 20;

/**
 * A server-sent event stream (`data: JSON\n\n` … `data: [DONE]\n\n`). A client that stops reading
 * while its output piles up past MAX_UNREAD_BYTES is cancelled rather than buffered without bound.
 */
export class EventStream {
  constructor(readonly response: ServerResponse, readonly onTooSlow: () => void) {}

  open(): void {
    this.response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
    this.response.flushHeaders();
  }

  send(data: unknown): void {
    if (this.response.destroyed || this.response.writableEnded) return;
    this.response.write(`data: ${JSON.stringify(data)}\n\n`);
    if (this.response.writableLength > MAX_UNREAD_BYTES) this.onTooSlow();
  }

  end(): void {
    if (this.response.destroyed || this.response.writableEnded) return;
    this.response.end("data: [DONE]\n\n");
  }
}
