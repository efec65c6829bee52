/**
 * JSON schemas of the request bodies (Fastify validates them with Ajv, types never coerced), and the
 * TypeScript shapes they guarantee. Fields OpenAI defines that the server does not implement are
 * typed here and accepted only at their no-op values (sampling.ts says so by name), so a client never
 * gets a result computed differently from what it asked for. Unknown fields are ignored, as older
 * servers ignore OpenAI's newer fields.
 */

/** Most choices one request may ask for (each is a sequence of the engine). */
export const MAX_CHOICES = 16;
/** Most prompts in one /v1/completions request. */
export const MAX_PROMPTS = 64;
/** Most top alternatives per token (OpenAI's chat limit; the engine's too). */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_STOP_STRINGS = 16;
/** Longest stop string, in UTF-16 units as the engine counts (the schema's maxLength counts code points). */
export const MAX_STOP_CHARS = 1000;
const MAX_STOP_TOKEN_IDS = 64;
const MAX_PROMPT_TOKENS = 1 << 20;
const MAX_MESSAGES = 4096;

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: "null" }] });
const tokenId = { type: "integer", minimum: 0, maximum: 0x7fffffff };

/** Fields /v1/completions and /v1/chat/completions share. */
const samplingProperties = {
  model: { type: "string", maxLength: 256 },
  max_tokens: nullable({ type: "integer", minimum: 0 }),
  temperature: nullable({ type: "number", minimum: 0, maximum: 2 }),
  top_p: nullable({ type: "number", exclusiveMinimum: 0, maximum: 1 }),
  // -1 or 0 disable it, as in vLLM.
  top_k: nullable({ type: "integer", minimum: -1 }),
  n: nullable({ type: "integer", minimum: 1, maximum: MAX_CHOICES }),
  seed: nullable({ type: "integer" }),
  stop: nullable({
    anyOf: [
      { type: "string", minLength: 1, maxLength: MAX_STOP_CHARS },
      { type: "array", maxItems: MAX_STOP_STRINGS, items: { type: "string", minLength: 1, maxLength: MAX_STOP_CHARS } },
    ],
  }),
  stop_token_ids: nullable({ type: "array", maxItems: MAX_STOP_TOKEN_IDS, items: tokenId }),
  ignore_eos: nullable({ type: "boolean" }),
  stream: nullable({ type: "boolean" }),
  stream_options: nullable({
    type: "object",
    properties: { include_usage: nullable({ type: "boolean" }) },
  }),
  presence_penalty: nullable({ type: "number" }),
  frequency_penalty: nullable({ type: "number" }),
  logit_bias: nullable({ type: "object" }),
  user: { type: "string" },
} as const;

export const completionRequestSchema = {
  type: "object",
  required: ["model", "prompt"],
  properties: {
    ...samplingProperties,
    prompt: {
      anyOf: [
        { type: "string" },
        { type: "array", minItems: 1, maxItems: MAX_PROMPTS, items: { type: "string" } },
        { type: "array", minItems: 1, maxItems: MAX_PROMPT_TOKENS, items: tokenId },
        {
          type: "array", minItems: 1, maxItems: MAX_PROMPTS,
          items: { type: "array", minItems: 1, maxItems: MAX_PROMPT_TOKENS, items: tokenId },
        },
      ],
    },
    logprobs: nullable({ type: "integer", minimum: 0, maximum: MAX_TOP_LOGPROBS }),
    echo: nullable({ type: "boolean" }),
    best_of: nullable({ type: "integer", minimum: 1 }),
    suffix: nullable({ type: "string" }),
  },
} as const;

const contentPart = {
  type: "object",
  required: ["type", "text"],
  properties: { type: { const: "text" }, text: { type: "string" } },
};

export const chatRequestSchema = {
  type: "object",
  required: ["model", "messages"],
  properties: {
    ...samplingProperties,
    messages: {
      type: "array", minItems: 1, maxItems: MAX_MESSAGES,
      items: {
        type: "object",
        required: ["role", "content"],
        properties: {
          role: { enum: ["system", "developer", "user", "assistant"] },
          content: { anyOf: [{ type: "string" }, { type: "array", items: contentPart }] },
          name: { type: "string" },
        },
      },
    },
    max_completion_tokens: nullable({ type: "integer", minimum: 0 }),
    logprobs: nullable({ type: "boolean" }),
    top_logprobs: nullable({ type: "integer", minimum: 0, maximum: MAX_TOP_LOGPROBS }),
    response_format: nullable({ type: "object", required: ["type"], properties: { type: { type: "string" } } }),
    tools: nullable({ type: "array" }),
  },
} as const;

export type StopField = string | string[] | null;

/** Fields both endpoints take, as validated. */
export interface SamplingRequest {
  model: string;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  n?: number | null;
  seed?: number | null;
  stop?: StopField;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, unknown> | null;
}

export interface CompletionRequest extends SamplingRequest {
  prompt: string | string[] | number[] | number[][];
  logprobs?: number | null;
  echo?: boolean | null;
  best_of?: number | null;
  suffix?: string | null;
}

export interface ChatMessage {
  role: "system" | "developer" | "user" | "assistant";
  content: string | { type: "text"; text: string }[];
  name?: string;
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  response_format?: { type: string } | null;
  tools?: unknown[] | null;
}
