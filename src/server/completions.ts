/**
 * POST /v1/completions: prompts (a string, strings, token ids or rows of ids) × n choices, in OpenAI's
 * text_completion shape, as JSON or as a stream. Choice index = prompt index × n + i, as OpenAI orders
 * them. `logprobs` is the legacy shape (tokens, token_logprobs, top_logprobs, text_offset); `echo`
 * puts the prompt before the completion (its tokens get no logprobs: echo with logprobs is refused).
 */
import { randomUUID } from "node:crypto";

import type { FastifyReply, FastifyRequest } from "fastify";

import type { CompletionChunk, CompletionLogprob } from "../engine/engine.js";
import { badRequest } from "./errors.js";
import type { ChoiceJob } from "./generation.js";
import { respond } from "./respond.js";
import { choiceOptions, completionBudget, rejectUnsupported } from "./sampling.js";
import type { CompletionRequest } from "./schemas.js";
import type { ServingContext } from "./server.js";

/** OpenAI's default max_tokens for completions. */
const DEFAULT_MAX_TOKENS = 16;

interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

export async function handleCompletions(ctx: ServingContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const body = request.body as CompletionRequest;
  ctx.checkModel(body.model);
  rejectUnsupported(body);
  if (body.echo && body.logprobs !== undefined && body.logprobs !== null) {
    throw badRequest("echo with logprobs is not supported by this server (prompt tokens get no logprobs)", "echo");
  }
  const prompts = promptList(body.prompt);
  const n = body.n ?? 1;
  // Admitted before tokenizing: a request waiting for its tokens holds its place (and shutdown waits for it).
  const release = ctx.admit(prompts.length * n);
  try {
    await serveCompletions(ctx, request, reply, body, prompts, n);
  } finally {
    release();
  }
}

async function serveCompletions(
  ctx: ServingContext, request: FastifyRequest, reply: FastifyReply, body: CompletionRequest, prompts: (string | number[])[], n: number,
): Promise<void> {
  const topLogprobs = body.logprobs ?? undefined;
  const jobs: ChoiceJob[] = [];
  const echoed: string[] = [];
  for (const [promptIndex, prompt] of prompts.entries()) {
    const promptParam = prompts.length === 1 ? "prompt" : `prompt[${promptIndex}]`;
    const promptIds = await ctx.promptIds(prompt, promptParam);
    const maxNewTokens = completionBudget(body.max_tokens, DEFAULT_MAX_TOKENS, promptIds.length, ctx.limits, "max_tokens", promptParam);
    for (let i = 0; i < n; i++) {
      jobs.push({ index: promptIndex * n + i, promptIndex, promptIds, maxNewTokens, options: choiceOptions(body, i, ctx.limits, topLogprobs) });
      echoed.push(body.echo ? (typeof prompt === "string" ? prompt : ctx.tokenizer.decode(promptIds)) : "");
    }
  }
  const id = `cmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const model = ctx.modelName;
  const textOffsets = echoed.map((text) => text.length);
  const legacyLogprobs = (index: number, logprobs: CompletionLogprob[] | undefined): LegacyLogprobs | null => {
    if (topLogprobs === undefined || !logprobs) return null;
    const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const entry of logprobs) {
      const token = ctx.tokenizer.decode([entry.token]);
      out.tokens.push(token);
      out.token_logprobs.push(entry.logprob);
      out.top_logprobs.push(Object.fromEntries(entry.top.map((top) => [ctx.tokenizer.decode([top.token]), top.logprob])));
      out.text_offset.push(textOffsets[index]!);
      textOffsets[index]! += token.length;
    }
    return out;
  };
  await respond(ctx, request, reply, {
    jobs,
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
    openingChunks: () => echoed.flatMap((text, index) =>
      text === "" ? [] : [{ id, object: "text_completion", created, model, choices: [{ index, text, logprobs: null, finish_reason: null }] }]),
    streamChunk: (index: number, chunk: CompletionChunk) => {
      if (chunk.text === "" && chunk.tokenIds.length === 0 && !chunk.finishReason) return null;
      return {
        id, object: "text_completion", created, model,
        choices: [{ index, text: chunk.text, logprobs: legacyLogprobs(index, chunk.logprobs), finish_reason: chunk.finishReason ?? null }],
      };
    },
    usageChunk: (usage) => ({ id, object: "text_completion", created, model, choices: [], usage }),
    body: (outcomes, usage) => ({
      id, object: "text_completion", created, model,
      choices: outcomes.map((outcome) => ({
        index: outcome.index,
        text: echoed[outcome.index]! + outcome.text,
        logprobs: legacyLogprobs(outcome.index, outcome.logprobs),
        finish_reason: outcome.finishReason,
      })),
      usage,
    }),
  });
}

/** The request's prompts, one entry per prompt. */
function promptList(prompt: CompletionRequest["prompt"]): (string | number[])[] {
  if (typeof prompt === "string") return [prompt];
  if (prompt.length > 0 && typeof prompt[0] === "number") return [prompt as number[]];
  return prompt as string[] | number[][];
}
