/**
 * Chat templates: OpenAI-style chat messages to prompt text, rendered the way Hugging Face's
 * `apply_chat_template` does (Jinja with trim_blocks and lstrip_blocks, the variables `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token` and `raise_exception`), with @huggingface/jinja.
 *
 * A checkpoint's template comes from its chat_template.jinja or tokenizer_config.json; a checkpoint
 * without one, and every keras-hub preset, gets DEFAULT_CHAT_TEMPLATE, the format of tiiuae/falcon-180B-chat.
 */
import { existsSync } from "node:fs";
import path from "node:path";

import { Environment as JinjaEnvironment, Interpreter as JinjaInterpreter, Template } from "@huggingface/jinja";

import { describeValue, FalconConfigError, FalconError, FalconInputError, FalconPresetError } from "./errors.js";
import { readBoundedTextFile, readJsonObject } from "./presets/json.js";

/**
 * The Falcon chat format (tiiuae/falcon-180B-chat): one line per turn, "System: ", "User: " or
 * "Falcon: " then the text; the generation prompt is "Falcon:" on a new line.
 */
export const DEFAULT_CHAT_TEMPLATE = String.raw`{% for message in messages %}{% if not loop.first %}{{ '\n' }}{% endif %}{% if message['role'] == 'system' %}{{ 'System: ' }}{% elif message['role'] == 'user' %}{{ 'User: ' }}{% else %}{{ 'Falcon: ' }}{% endif %}{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '\nFalcon:' }}{% endif %}`;

/** Real templates are a few kilobytes (the largest, with tool calling, tens). */
export const MAX_CHAT_TEMPLATE_CHARS = 256 * 1024;
/** Messages one chat may have. */
export const MAX_CHAT_MESSAGES = 4096;
/** Text parts one message's content array may have. */
export const MAX_CHAT_CONTENT_PARTS = 4096;
/** UTF-16 code units of all the messages' text (content and names) together. */
export const MAX_CHAT_TEXT_CHARS = 4 * 1024 * 1024;

/*
 * A template file is code: its loops, recursion and string building are bounded while it runs, since
 * the interpreter is synchronous and could otherwise hold the event loop or exhaust the heap. What
 * stays unbounded: a single builtin (a filter such as `indent(width)` or `join`) may build one string
 * up to V8's largest (2^29 - 24 code units, 1 GiB) before its result is checked; a longer one is a
 * RangeError, reported as a render failure like any other.
 */
/**
 * Expressions, statements and loop items one render may evaluate: under a second of interpretation,
 * and about a hundred steps for each of MAX_CHAT_MESSAGES (ChatML takes 16 per message).
 */
export const MAX_TEMPLATE_STEPS = 500_000;
/**
 * Wall-clock bound of one render, for steps that each cost far more than one evaluation (a filter
 * over a long string or list). Real templates render in milliseconds.
 */
export const MAX_TEMPLATE_RENDER_MS = 2000;
/** Nesting of evaluation (macro recursion): far below the JavaScript stack's limit. */
export const MAX_TEMPLATE_DEPTH = 512;
/** The longest string any expression, block or the whole render may produce. */
export const MAX_TEMPLATE_STRING_CHARS = 4 * MAX_CHAT_TEXT_CHARS;
/** The longest list any expression may produce (range() checks before it allocates). */
export const MAX_TEMPLATE_LIST_LENGTH = 65_536;

export type ChatRole = "system" | "user" | "assistant" | "developer";

/** One part of a message's content; only text parts exist for a text model. */
export interface ChatTextPart {
  type: "text";
  text: string;
}

/** An OpenAI chat message. "developer" is OpenAI's newer name for "system" and renders as one. */
export interface ChatMessage {
  role: ChatRole;
  /** Text, or text parts (joined with "\n", as vLLM does). */
  content: string | readonly ChatTextPart[];
  name?: string;
}

export interface RenderChatOptions {
  /** End with the prompt that makes the model answer as the assistant (default true). */
  addGenerationPrompt?: boolean;
}

export interface ChatTemplateOptions {
  /** The value of `bos_token` in the template (undefined there when not given, as in transformers). */
  bosToken?: string;
  /** The value of `eos_token` in the template. */
  eosToken?: string;
}

/** A message field that fails validation; `param` names it as OpenAI's error `param` does (`messages[2].role`). */
export class FalconChatMessageError extends FalconInputError {
  constructor(
    readonly param: string,
    problem: string,
  ) {
    super(`${param}: ${problem}`);
  }
}

/** A parsed chat template and the special tokens it is rendered with. */
export class ChatTemplate {
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  /** @internal */
  readonly program: Template["parsed"];

  /** Parses `source`; a template too long or that does not parse is a FalconConfigError. */
  constructor(
    readonly source: string,
    options: ChatTemplateOptions = {},
  ) {
    if (typeof source !== "string") throw new FalconConfigError(`a chat template must be a string, got ${describeValue(source)}`);
    if (source.length > MAX_CHAT_TEMPLATE_CHARS) {
      throw new FalconConfigError(`the chat template has ${source.length} characters, more than the limit of ${MAX_CHAT_TEMPLATE_CHARS}`);
    }
    for (const key of ["bosToken", "eosToken"] as const) {
      const token = options[key];
      if (token !== undefined && typeof token !== "string") throw new FalconConfigError(`${key} must be a string, got ${describeValue(token)}`);
    }
    this.bosToken = options.bosToken;
    this.eosToken = options.eosToken;
    try {
      this.program = new Template(source).parsed;
    } catch (cause) {
      // Any failure of the lexer or parser (a RangeError on absurd nesting included) is the template's.
      throw new FalconConfigError(`the chat template does not parse: ${(cause as Error).message}`, { cause });
    }
  }

  /** Whether this is DEFAULT_CHAT_TEMPLATE (the checkpoint has none of its own). */
  get isDefault(): boolean {
    return this.source === DEFAULT_CHAT_TEMPLATE;
  }
}

/** DEFAULT_CHAT_TEMPLATE, parsed. */
export function defaultChatTemplate(): ChatTemplate {
  return new ChatTemplate(DEFAULT_CHAT_TEMPLATE);
}

/** A special token of tokenizer_config.json: a string, or an AddedToken object `{ "content": ... }`. */
function readSpecialToken(config: Record<string, unknown>, key: string, file: string): string | undefined {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "object" && !Array.isArray(value)) {
    const content = (value as Record<string, unknown>)["content"];
    if (typeof content === "string") return content;
    throw new FalconPresetError(`${file}: "${key}".content must be a string, got ${describeValue(content)}`);
  }
  throw new FalconPresetError(`${file}: "${key}" must be a string or an object with a "content" string, got ${describeValue(value)}`);
}

/** `chat_template` of tokenizer_config.json: a string, or a list of named templates of which "default" is used. */
function readTemplateSource(config: Record<string, unknown>, file: string): string | undefined {
  const value = config["chat_template"];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) {
    throw new FalconPresetError(`${file}: "chat_template" must be a string or a list of {name, template}, got ${describeValue(value)}`);
  }
  let found: string | undefined;
  for (const [index, entry] of value.entries()) {
    const where = `"chat_template"[${index}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw new FalconPresetError(`${file}: ${where} must be an object with "name" and "template", got ${describeValue(entry)}`);
    }
    const { name, template } = entry as Record<string, unknown>;
    if (typeof name !== "string") throw new FalconPresetError(`${file}: ${where}.name must be a string, got ${describeValue(name)}`);
    if (typeof template !== "string") throw new FalconPresetError(`${file}: ${where}.template must be a string, got ${describeValue(template)}`);
    if (name !== "default") continue;
    if (found !== undefined) throw new FalconPresetError(`${file}: "chat_template" has more than one template named "default"`);
    found = template;
  }
  if (found === undefined) throw new FalconPresetError(`${file}: "chat_template" is a list with no template named "default"`);
  return found;
}

/**
 * The chat template of a checkpoint directory: its chat_template.jinja (where transformers 4.43 and
 * later save it, and which it reads first), else `chat_template` of its tokenizer_config.json, rendered
 * with that file's `bos_token` and `eos_token`; DEFAULT_CHAT_TEMPLATE when there is neither. A
 * malformed file or a template that does not parse is a FalconPresetError naming the file.
 */
export function loadChatTemplate(directory: string): ChatTemplate {
  const configFile = path.join(directory, "tokenizer_config.json");
  const config = existsSync(configFile) ? readJsonObject(configFile) : {};
  const options: ChatTemplateOptions = {};
  const bosToken = readSpecialToken(config, "bos_token", configFile);
  const eosToken = readSpecialToken(config, "eos_token", configFile);
  if (bosToken !== undefined) options.bosToken = bosToken;
  if (eosToken !== undefined) options.eosToken = eosToken;
  const templateFile = path.join(directory, "chat_template.jinja");
  // UTF-8 takes at least one byte per UTF-16 unit and at most four (three in the BMP, four per surrogate pair).
  const [source, where] = existsSync(templateFile)
    ? [readBoundedTextFile(templateFile, 4 * MAX_CHAT_TEMPLATE_CHARS), templateFile]
    : [readTemplateSource(config, configFile), `${configFile}: "chat_template"`];
  if (source === undefined) return new ChatTemplate(DEFAULT_CHAT_TEMPLATE, options);
  try {
    return new ChatTemplate(source, options);
  } catch (cause) {
    throw new FalconPresetError(`${where}: ${(cause as Error).message}`, { cause });
  }
}

interface TemplateMessage {
  role: "system" | "user" | "assistant";
  content: string;
  name?: string;
}

const ROLES: ReadonlySet<string> = new Set<ChatRole>(["system", "user", "assistant", "developer"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Checks the messages and brings them to the shape templates expect (content a string, "developer" as "system"). */
function normalizeMessages(messages: unknown): TemplateMessage[] {
  if (!Array.isArray(messages)) throw new FalconChatMessageError("messages", `must be an array, got ${describeValue(messages)}`);
  if (messages.length === 0) throw new FalconChatMessageError("messages", "must have at least one message");
  if (messages.length > MAX_CHAT_MESSAGES) {
    throw new FalconChatMessageError("messages", `has ${messages.length} messages, more than the limit of ${MAX_CHAT_MESSAGES}`);
  }
  let textChars = 0;
  const countText = (text: string, param: string) => {
    textChars += text.length;
    if (textChars > MAX_CHAT_TEXT_CHARS) {
      throw new FalconChatMessageError(param, `the messages' text exceeds the limit of ${MAX_CHAT_TEXT_CHARS} characters`);
    }
  };
  const normalized: TemplateMessage[] = [];
  for (let i = 0; i < messages.length; i++) {
    const at = `messages[${i}]`;
    const message: unknown = messages[i];
    if (!isRecord(message)) throw new FalconChatMessageError(at, `must be an object, got ${describeValue(message)}`);
    const role = message["role"];
    if (typeof role !== "string" || !ROLES.has(role)) {
      throw new FalconChatMessageError(`${at}.role`, `must be "system", "user", "assistant" or "developer", got ${describeValue(role)}`);
    }
    const content = message["content"];
    let text: string;
    if (typeof content === "string") {
      countText(content, `${at}.content`);
      text = content;
    } else if (Array.isArray(content)) {
      if (content.length > MAX_CHAT_CONTENT_PARTS) {
        throw new FalconChatMessageError(`${at}.content`, `has ${content.length} parts, more than the limit of ${MAX_CHAT_CONTENT_PARTS}`);
      }
      const texts: string[] = [];
      for (let j = 0; j < content.length; j++) {
        const partAt = `${at}.content[${j}]`;
        const part: unknown = content[j];
        if (!isRecord(part)) throw new FalconChatMessageError(partAt, `must be an object, got ${describeValue(part)}`);
        if (part["type"] !== "text") {
          throw new FalconChatMessageError(`${partAt}.type`, `only "text" parts are supported, got ${describeValue(part["type"])}`);
        }
        const partText = part["text"];
        if (typeof partText !== "string") throw new FalconChatMessageError(`${partAt}.text`, `must be a string, got ${describeValue(partText)}`);
        countText(partText, `${partAt}.text`);
        texts.push(partText);
      }
      text = texts.join("\n");
    } else {
      throw new FalconChatMessageError(`${at}.content`, `must be a string or an array of text parts, got ${describeValue(content)}`);
    }
    const entry: TemplateMessage = { role: role === "developer" ? "system" : (role as TemplateMessage["role"]), content: text };
    const name = message["name"];
    if (name !== undefined) {
      if (typeof name !== "string") throw new FalconChatMessageError(`${at}.name`, `must be a string, got ${describeValue(name)}`);
      countText(name, `${at}.name`);
      entry.name = name;
    }
    normalized.push(entry);
  }
  return normalized;
}

/*
 * The package's declaration files import its runtime module by an extensionless path, which NodeNext
 * resolution cannot follow, so Environment and Interpreter arrive untyped; these are the parts used here.
 */
interface RuntimeValue {
  type: string;
  value: unknown;
}
interface Environment {
  set(name: string, value: unknown): RuntimeValue;
}
interface Interpreter {
  run(program: Template["parsed"]): RuntimeValue;
  evaluate(statement: unknown, environment: unknown): RuntimeValue;
}
const Environment = JinjaEnvironment as unknown as new () => Environment;
const Interpreter = JinjaInterpreter as unknown as new (environment: Environment) => Interpreter;

const LOOP_ITEM_STEPS = 4;

interface ForStatement {
  type: "For";
  iterable: { type: string; lhs?: unknown };
}

function isForStatement(statement: unknown): statement is ForStatement {
  return (statement as { type?: unknown } | undefined)?.type === "For";
}

/**
 * The interpreter with the bounds above: steps, nesting, time, and the size of every value it produces.
 * A for loop walks its whole list before it runs the body, without evaluating anything per item, so
 * its items are charged when the list is evaluated: LOOP_ITEM_STEPS each, as an item costs about as
 * much as four evaluations (a scope and a `loop` object each).
 */
class BoundedInterpreter extends Interpreter {
  private steps = 0;
  private depth = 0;
  private readonly deadline = performance.now() + MAX_TEMPLATE_RENDER_MS;
  /** The expressions for loops iterate over (`messages` in `for message in messages`, the list before `if` in a filtered loop). */
  private readonly loopLists = new Set<unknown>();

  private charge(steps: number): void {
    this.steps += steps;
    if (this.steps > MAX_TEMPLATE_STEPS) {
      throw new FalconInputError(`the chat template took more than ${MAX_TEMPLATE_STEPS} evaluation steps`);
    }
  }

  override evaluate(...args: Parameters<Interpreter["evaluate"]>): RuntimeValue {
    const statement = args[0];
    this.charge(1);
    if (isForStatement(statement)) {
      const { iterable } = statement;
      this.loopLists.add(iterable.type === "SelectExpression" ? iterable.lhs : iterable);
    }
    if (performance.now() > this.deadline) {
      throw new FalconInputError(`the chat template took more than ${MAX_TEMPLATE_RENDER_MS} ms to render`);
    }
    if (++this.depth > MAX_TEMPLATE_DEPTH) {
      throw new FalconInputError(`the chat template nested evaluation deeper than ${MAX_TEMPLATE_DEPTH} levels`);
    }
    try {
      const result = super.evaluate(...args);
      const value: unknown = result.value;
      if (typeof value === "string" && value.length > MAX_TEMPLATE_STRING_CHARS) {
        throw new FalconInputError(`the chat template built a string of ${value.length} characters, more than the limit of ${MAX_TEMPLATE_STRING_CHARS}`);
      }
      if (Array.isArray(value) && value.length > MAX_TEMPLATE_LIST_LENGTH) {
        throw new FalconInputError(`the chat template built a list of ${value.length} items, more than the limit of ${MAX_TEMPLATE_LIST_LENGTH}`);
      }
      if (this.loopLists.has(statement)) {
        if (Array.isArray(value)) this.charge(value.length * LOOP_ITEM_STEPS);
        else if (value instanceof Map) this.charge(value.size * LOOP_ITEM_STEPS);
      }
      return result;
    } finally {
      this.depth--;
    }
  }
}

/** Python's range() for templates, refusing before it allocates a list longer than MAX_TEMPLATE_LIST_LENGTH. */
function boundedRange(...args: unknown[]): number[] {
  if (args.length < 1 || args.length > 3 || !args.every((arg) => Number.isSafeInteger(arg))) {
    throw new FalconInputError("range() takes one to three integers");
  }
  const [start, stop, step] = (args.length === 1 ? [0, args[0], 1] : [args[0], args[1], args[2] ?? 1]) as [number, number, number];
  if (step === 0) throw new FalconInputError("range() step must not be zero");
  const length = Math.max(0, Math.ceil((stop - start) / step));
  if (length > MAX_TEMPLATE_LIST_LENGTH) {
    throw new FalconInputError(`range() of ${length} items is more than the limit of ${MAX_TEMPLATE_LIST_LENGTH}`);
  }
  return Array.from({ length }, (_, i) => start + i * step);
}

const MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/**
 * strftime_now(format), which transformers gives templates (Llama 3's puts today's date in the system
 * prompt): the fields the library's own global knows, in Python's C locale.
 */
function strftimeNow(format: unknown): string {
  if (typeof format !== "string") throw new FalconInputError(`strftime_now() takes a format string, got ${describeValue(format)}`);
  const now = new Date();
  const pad2 = (n: number) => String(n).padStart(2, "0");
  return format.replace(/%[YmdbBHM%]/g, (field) => {
    switch (field) {
      case "%Y": return String(now.getFullYear());
      case "%m": return pad2(now.getMonth() + 1);
      case "%d": return pad2(now.getDate());
      case "%b": return MONTH_NAMES[now.getMonth()].slice(0, 3);
      case "%B": return MONTH_NAMES[now.getMonth()];
      case "%H": return pad2(now.getHours());
      case "%M": return pad2(now.getMinutes());
      default: return "%";
    }
  });
}

/**
 * Renders `messages` (OpenAI's shape, see ChatMessage) with `template` into the prompt text. Invalid
 * messages are a FalconChatMessageError naming the field; a template that calls raise_exception, fails
 * or exceeds its bounds while rendering is a FalconInputError with its message.
 */
export function renderChat(template: ChatTemplate, messages: readonly ChatMessage[], options: RenderChatOptions = {}): string {
  if (!(template instanceof ChatTemplate)) throw new FalconInputError(`renderChat needs a ChatTemplate, got ${describeValue(template)}`);
  if (!isRecord(options)) throw new FalconInputError(`renderChat options must be an object, got ${describeValue(options)}`);
  const addGenerationPrompt = options.addGenerationPrompt ?? true;
  if (typeof addGenerationPrompt !== "boolean") {
    throw new FalconInputError(`addGenerationPrompt must be a boolean, got ${describeValue(addGenerationPrompt)}`);
  }
  const templateMessages = normalizeMessages(messages);
  // The library's globals (setupGlobals is not exported), with a bounded range() and a typed raise_exception.
  const globals: Record<string, unknown> = {
    true: true, false: false, none: null, True: true, False: false, None: null,
    range: boundedRange,
    strftime_now: strftimeNow,
    raise_exception: (message: unknown) => {
      throw new FalconInputError(`the chat template raised an exception: ${String(message)}`);
    },
    messages: templateMessages,
    add_generation_prompt: addGenerationPrompt,
    bos_token: template.bosToken,
    eos_token: template.eosToken,
  };
  const environment = new Environment();
  for (const [name, value] of Object.entries(globals)) environment.set(name, value);
  try {
    return new BoundedInterpreter(environment).run(template.program).value as string;
  } catch (cause) {
    if (cause instanceof FalconError) throw cause;
    throw new FalconInputError(`the chat template failed: ${(cause as Error).message}`, { cause });
  }
}
