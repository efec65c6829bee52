/**
 * Errors as OpenAI's API returns them: `{"error": {"message", "type", "param", "code"}}` with the HTTP
 * status that says what went wrong. Every failure a request can meet ends here, so the server answers
 * with a status and a message that names the problem, never with a stack or a dropped connection.
 */
import { FalconChatMessageError } from "../chat-template.js";
import { FalconDisposedError, FalconInputError } from "../errors.js";

export type OpenAIErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "rate_limit_error" | "server_error";

/** A request's failure: its status, and the body OpenAI's clients parse. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: OpenAIErrorType = "invalid_request_error",
    /** The request field at fault (OpenAI's `param`). */
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): HttpError {
  return new HttpError(400, message, "invalid_request_error", param, code);
}

/** What Fastify attaches to its own errors (validation, body parsing, size limits). */
interface FastifyLikeError {
  statusCode?: number;
  code?: string;
  validation?: { instancePath: string; params?: Record<string, unknown>; message?: string }[];
  validationContext?: string;
}

/** `/messages/0/role` → `messages[0].role`, as OpenAI names fields. */
function fieldName(instancePath: string, missing?: unknown): string | null {
  const parts = instancePath.split("/").filter((part) => part !== "");
  if (typeof missing === "string") parts.push(missing);
  if (parts.length === 0) return null;
  return parts.map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : i === 0 ? part : `.${part}`)).join("");
}

/** Any error thrown while serving a request, as the response it becomes. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  const fastify = error as FastifyLikeError;
  if (fastify?.validation && fastify.validation.length > 0) {
    const first = fastify.validation[0]!;
    const param = fieldName(first.instancePath, first.params?.["missingProperty"]);
    const where = param ?? (fastify.validationContext === "body" ? "the request body" : "the request");
    const message = first.params?.["missingProperty"] !== undefined ? "is required" : first.message ?? "is invalid";
    return badRequest(`${where} ${message}`, param);
  }
  if (fastify?.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return new HttpError(413, "the request body is too large", "invalid_request_error", null, "request_too_large");
  }
  if (fastify?.code === "FST_ERR_CTP_INVALID_JSON_BODY" || fastify?.code === "FST_ERR_CTP_EMPTY_JSON_BODY" || error instanceof SyntaxError) {
    return badRequest(`the request body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof fastify?.statusCode === "number" && fastify.statusCode >= 400 && fastify.statusCode < 500) {
    return new HttpError(fastify.statusCode, (error as Error).message);
  }
  if (error instanceof FalconDisposedError) return new HttpError(503, error.message, "server_error");
  if (error instanceof FalconChatMessageError) return badRequest(error.message, error.param);
  if (error instanceof FalconInputError) return badRequest(error.message);
  return new HttpError(500, `internal error: ${error instanceof Error ? error.message : String(error)}`, "server_error");
}
