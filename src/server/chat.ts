/**
 * POST /v1/chat/completions: the messages rendered by the model's chat template (chat-template.ts),
 * then n choices of one prompt, in OpenAI's chat.completion shape, as JSON or as a stream of deltas
 * (a role delta first, content deltas, an empty delta with the finish reason).
 */
import { randomUUID } from "node:crypto";

import type { FastifyReply, FastifyRequest } from "fastify";

import type { CompletionChunk, CompletionLogprob } from "../engine/engine.js";
import { badRequest } from "./errors.js";
import { tokenText, type ChoiceJob } from "./generation.js";
import { respond } from "./respond.js";
import { choiceOptions, completionBudget, rejectUnsupported } from "./sampling.js";
import type { ChatRequest } from "./schemas.js";
import type { ServingContext } from "./server.js";

interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export async function handleChatCompletions(ctx: ServingContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const body = request.body as ChatRequest;
  ctx.checkModel(body.model);
  rejectUnsupported(body);
  if (body.top_logprobs !== undefined && body.top_logprobs !== null && !body.logprobs) {
    throw badRequest("top_logprobs needs logprobs: true", "top_logprobs");
  }
  const n = body.n ?? 1;
  // Admitted before tokenizing: a request waiting for its tokens holds its place (and shutdown waits for it).
  const release = ctx.admit(n);
  try {
    await serveChat(ctx, request, reply, body, n);
  } finally {
    release();
  }
}

async function serveChat(ctx: ServingContext, request: FastifyRequest, reply: FastifyReply, body: ChatRequest, n: number): Promise<void> {
  const prompt = ctx.renderChat(body.messages);
  const promptIds = await ctx.promptIds(prompt, "messages");
  const requested = body.max_completion_tokens ?? body.max_tokens;
  const maxNewTokens = completionBudget(requested, null, promptIds.length, ctx.limits, body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens", "messages");
  const topLogprobs = body.logprobs ? body.top_logprobs ?? 0 : undefined;
  const jobs: ChoiceJob[] = [];
  for (let i = 0; i < n; i++) {
    jobs.push({ index: i, promptIndex: 0, promptIds, maxNewTokens, options: choiceOptions(body, i, ctx.limits, topLogprobs) });
  }
  const id = `chatcmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const model = ctx.modelName;
  const chatLogprobs = (logprobs: CompletionLogprob[] | undefined): { content: (ChatTokenLogprob & { top_logprobs: ChatTokenLogprob[] })[] } | null => {
    if (topLogprobs === undefined || !logprobs) return null;
    return {
      content: logprobs.map((entry) => ({
        ...tokenText(ctx.tokenizer, entry.token),
        logprob: entry.logprob,
        top_logprobs: entry.top.map((top) => ({ ...tokenText(ctx.tokenizer, top.token), logprob: top.logprob })),
      })),
    };
  };
  const chunkOf = (index: number, delta: Record<string, string>, logprobs: unknown, finishReason: string | null) => ({
    id, object: "chat.completion.chunk", created, model,
    choices: [{ index, delta, logprobs, finish_reason: finishReason }],
  });
  await respond(ctx, request, reply, {
    jobs,
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
    openingChunks: () => jobs.map((job) => chunkOf(job.index, { role: "assistant", content: "" }, null, null)),
    streamChunk: (index: number, chunk: CompletionChunk) => {
      if (chunk.text === "" && chunk.tokenIds.length === 0 && !chunk.finishReason) return null;
      return chunkOf(index, chunk.text === "" ? {} : { content: chunk.text }, chatLogprobs(chunk.logprobs), chunk.finishReason ?? null);
    },
    usageChunk: (usage) => ({ id, object: "chat.completion.chunk", created, model, choices: [], usage }),
    body: (outcomes, usage) => ({
      id, object: "chat.completion", created, model,
      choices: outcomes.map((outcome) => ({
        index: outcome.index,
        message: { role: "assistant", content: outcome.text },
        logprobs: chatLogprobs(outcome.logprobs),
        finish_reason: outcome.finishReason,
      })),
      usage,
    }),
  });
}
