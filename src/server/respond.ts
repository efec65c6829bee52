/**
 * What both generation endpoints do with a planned (and admitted) request: run its choices, and answer
 * with one JSON body or a server-sent event stream. A client that goes away cancels its sequences
 * (the engine drops them within a step and frees their KV blocks); a shutdown past its grace period
 * ends a stream with an error event, and a pending JSON answer with 503.
 */
import { defaultMaxListeners, setMaxListeners } from "node:events";

import type { FastifyReply, FastifyRequest } from "fastify";

import type { CompletionChunk } from "../engine/engine.js";
import { HttpError, toHttpError } from "./errors.js";
import { EventStream, runChoices, type ChoiceJob, type ChoiceOutcome, type GenerationRecord } from "./generation.js";
import { recordOf, type ServingContext } from "./server.js";

/** How an endpoint shapes its answer. */
export interface ResponsePlan {
  jobs: ChoiceJob[];
  stream: boolean;
  includeUsage: boolean;
  /** Stream chunks that open each choice (chat's role delta; completions' echoed prompt). */
  openingChunks(): unknown[];
  /** One engine chunk of a choice as a stream chunk (null: nothing to send). */
  streamChunk(index: number, chunk: CompletionChunk): unknown | null;
  /** The usage-only stream chunk. */
  usageChunk(usage: Usage): unknown;
  /** The whole JSON answer. */
  body(outcomes: ChoiceOutcome[], usage: Usage): unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Thrown into a request's sequences when its client is gone. */
class ClientGone extends Error {}

export async function respond(ctx: ServingContext, request: FastifyRequest, reply: FastifyReply, plan: ResponsePlan): Promise<void> {
  const abort = new AbortController();
  // Every choice's engine request listens on it (up to MAX_PROMPTS × MAX_CHOICES): not a leak to warn of.
  setMaxListeners(Math.max(defaultMaxListeners, plan.jobs.length), abort.signal);
  const log = recordOf(request);
  const record: GenerationRecord = { arrivedAt: log.arrivedAt, firstTokenAt: null, promptTokens: 0, completionTokens: 0 };
  log.generation = record;
  const response = reply.raw;
  const onClose = () => {
    if (!response.writableFinished) abort.abort(new ClientGone("the client closed the connection"));
  };
  response.on("close", onClose);
  const stopOnShutdown = ctx.onShutdownDeadline(() => abort.abort(new HttpError(503, "the server is shutting down", "server_error")));
  try {
    if (plan.stream) {
      reply.hijack();
      const events = new EventStream(response, () => {
        const tooSlow = new ClientGone("the client reads the stream too slowly");
        log.error = tooSlow.message;
        abort.abort(tooSlow);
        // Its unread output goes with the connection: nothing more piles up for it, and no stream is left
        // open without an end.
        response.destroy();
      });
      events.open();
      for (const chunk of plan.openingChunks()) events.send(chunk);
      try {
        const outcomes = await runChoices(ctx.engine, plan.jobs, record, ctx.metrics, abort, (index, chunk) => {
          const shaped = plan.streamChunk(index, chunk);
          if (shaped !== null) events.send(shaped);
        });
        if (plan.includeUsage) events.send(plan.usageChunk(usageOf(outcomes)));
      } catch (error) {
        if (error instanceof ClientGone) {
          log.error = error.message;
          return;
        }
        const failure = toHttpError(error);
        log.error = failure.message;
        events.send(failure.body());
      }
      events.end();
    } else {
      let outcomes: ChoiceOutcome[];
      try {
        outcomes = await runChoices(ctx.engine, plan.jobs, record, ctx.metrics, abort);
      } catch (error) {
        if (error instanceof ClientGone) {
          log.error = error.message;
          // Nobody to answer: tell Fastify the response is handled.
          reply.hijack();
          response.destroy();
          return;
        }
        throw error;
      }
      await reply.send(plan.body(outcomes, usageOf(outcomes)));
    }
  } finally {
    response.off("close", onClose);
    stopOnShutdown();
    ctx.metrics.requestDuration.observe((performance.now() - record.arrivedAt) / 1000);
  }
}

function usageOf(outcomes: ChoiceOutcome[]): Usage {
  let prompt = 0;
  let completion = 0;
  const counted = new Set<number>();
  for (const outcome of outcomes) {
    completion += outcome.tokenIds.length;
    // n choices of one prompt count its tokens once, as OpenAI's usage does.
    if (!counted.has(outcome.promptIndex)) {
      counted.add(outcome.promptIndex);
      prompt += outcome.promptTokens;
    }
  }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
