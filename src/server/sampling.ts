/**
 * An OpenAI request's sampling fields as the engine's options. Defaults are OpenAI's (temperature 1,
 * top_p 1: sampling from the whole distribution); temperature 0 is greedy. `top_k`, `stop_token_ids`
 * and `ignore_eos` are vLLM's extensions, with vLLM's meaning. With `seed`, choice i samples with
 * seed + i, so each choice equals a request with n = 1 and that seed.
 */
import type { CompleteStreamOptions } from "../engine/engine.js";
import type { SamplerConfig } from "../samplers.js";
import { badRequest } from "./errors.js";
import { MAX_STOP_CHARS, type ChatRequest, type CompletionRequest, type SamplingRequest } from "./schemas.js";

/** What a request may ask of this model. */
export interface ModelLimits {
  /** Prompt + completion tokens at most (the model's maxPositionEmbeddings). */
  contextLength: number;
  /** Tokens the whole KV pool holds: one sequence can never be longer. */
  kvPoolTokens: number;
  /** The default stop token (the end token), when the tokenizer has one. */
  endTokenId: number | undefined;
}

/** Refuses fields this server does not implement unless they ask for what it does anyway. */
export function rejectUnsupported(body: CompletionRequest | ChatRequest): void {
  for (const name of ["presence_penalty", "frequency_penalty"] as const) {
    const value = body[name];
    if (value !== undefined && value !== null && value !== 0) throw badRequest(`${name} is not supported by this server (only 0)`, name);
  }
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw badRequest("logit_bias is not supported by this server", "logit_bias");
  if ("best_of" in body && body.best_of !== undefined && body.best_of !== null && body.best_of !== (body.n ?? 1)) {
    throw badRequest("best_of is not supported by this server (only best_of = n)", "best_of");
  }
  if ("suffix" in body && body.suffix) throw badRequest("suffix is not supported by this server", "suffix");
  if ("tools" in body && body.tools && body.tools.length > 0) throw badRequest("tools are not supported by this server", "tools");
  if ("response_format" in body && body.response_format && body.response_format.type !== "text") {
    throw badRequest(`response_format ${JSON.stringify(body.response_format.type)} is not supported by this server (only "text")`, "response_format");
  }
}

/** The sampler of choice `choice`. */
export function samplerFor(body: SamplingRequest, choice: number): SamplerConfig {
  const temperature = body.temperature ?? 1;
  if (temperature === 0) return { type: "greedy" };
  const k = body.top_k !== undefined && body.top_k !== null && body.top_k > 0 ? body.top_k : undefined;
  const p = body.top_p !== undefined && body.top_p !== null && body.top_p < 1 ? body.top_p : undefined;
  const seed = body.seed === undefined || body.seed === null ? undefined : choiceSeed(body.seed, choice);
  const common = { temperature, ...(seed === undefined ? {} : { seed }) };
  if (p !== undefined) return { type: "topP", p, ...(k === undefined ? {} : { k }), ...common };
  if (k !== undefined) return { type: "topK", k, ...common };
  return { type: "random", ...common };
}

/** seed + choice as the sampler's non-negative seed (any JSON integer a client sends maps to one). */
function choiceSeed(seed: number, choice: number): number {
  const sum = seed + choice;
  return sum >= 0 && Number.isSafeInteger(sum) ? sum : Number(BigInt.asUintN(32, BigInt(seed) + BigInt(choice)));
}

/**
 * New tokens for a prompt of `promptTokens`: the request's max_tokens (checked against the context and
 * the pool: a request that cannot fit is a 400, as in OpenAI's API), or `fallback` (null: the rest of
 * the context). A prompt too long for any completion is refused naming `promptParam`.
 */
export function completionBudget(
  requested: number | null | undefined, fallback: number | null, promptTokens: number, limits: ModelLimits, param: string, promptParam: string,
): number {
  const room = Math.min(limits.contextLength, limits.kvPoolTokens + 1) - promptTokens;
  if (room < 0 || (room === 0 && requested !== 0)) {
    throw badRequest(
      `the prompt has ${promptTokens} tokens; this model's maximum context length is ${limits.contextLength} tokens` +
        (limits.kvPoolTokens + 1 < limits.contextLength ? ` and its KV cache holds ${limits.kvPoolTokens}` : ""),
      promptParam, "context_length_exceeded",
    );
  }
  if (requested === undefined || requested === null) return fallback === null ? room : Math.min(fallback, room);
  if (requested > room) {
    throw badRequest(
      `this model's maximum context length is ${limits.contextLength} tokens` +
        (limits.kvPoolTokens + 1 < limits.contextLength ? ` (its KV cache holds ${limits.kvPoolTokens})` : "") +
        `; the request asks for ${promptTokens} prompt + ${requested} completion tokens`,
      param, "context_length_exceeded",
    );
  }
  return requested;
}

/** The engine options of one choice (runChoices adds its budget and the request's abort signal). */
export function choiceOptions(body: SamplingRequest, choice: number, limits: ModelLimits, topLogprobs: number | undefined): CompleteStreamOptions {
  const stopTokenIds = [
    ...(body.ignore_eos || limits.endTokenId === undefined ? [] : [limits.endTokenId]),
    ...(body.stop_token_ids ?? []),
  ];
  const stop = body.stop ?? undefined;
  // Checked here, before a stream starts, as the engine counts: astral characters count twice.
  for (const text of typeof stop === "string" ? [stop] : stop ?? []) {
    if (text.length > MAX_STOP_CHARS) throw badRequest(`stop strings are at most ${MAX_STOP_CHARS} UTF-16 code units; one has ${text.length}`, "stop");
  }
  return {
    sampler: samplerFor(body, choice),
    stopTokenIds,
    ...(stop === undefined || (Array.isArray(stop) && stop.length === 0) ? {} : { stop }),
    ...(topLogprobs === undefined ? {} : { logprobs: topLogprobs }),
  };
}
