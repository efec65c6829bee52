/**
 * Chat templates: the default Falcon format, real-world Hugging Face templates (Zephyr, ChatML with a
 * bos token, Mistral's raise_exception, a list of named templates), message validation naming the
 * field, hostile templates cut by their bounds, bad tokenizer_config.json files, and the model wiring.
 * Every expected prompt is written out by hand from the template's text.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import {
  ChatTemplate,
  DEFAULT_CHAT_TEMPLATE,
  FalconCausalLM,
  FalconChatMessageError,
  FalconConfigError,
  FalconInputError,
  FalconPresetError,
  MAX_CHAT_CONTENT_PARTS,
  MAX_CHAT_MESSAGES,
  MAX_CHAT_TEMPLATE_CHARS,
  MAX_CHAT_TEXT_CHARS,
  defaultChatTemplate,
  loadChatTemplate,
  renderChat,
  type ChatMessage,
} from "../src/index.js";
import { FIXTURES } from "./helpers/fixtures.js";

const HF_CHECKPOINT = path.join(FIXTURES, "hf", "f7b_rotary_mqa_parallel", "checkpoint");
const KERAS_PRESET = path.join(FIXTURES, "keras", "falcon_h3_d24_l2", "preset");

const temporary: string[] = [];
after(() => temporary.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function temporaryDirectory(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "falcon-chat-template-"));
  temporary.push(dir);
  return dir;
}

/** A directory holding only tokenizer_config.json with `config` (a string is written as is). */
function withTokenizerConfig(config: unknown): string {
  const dir = temporaryDirectory();
  writeFileSync(path.join(dir, "tokenizer_config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
}

/** A copy of `preset` (its files only), with `extra` files added. */
function copyPreset(preset: string, extra: Record<string, string> = {}): string {
  const dir = temporaryDirectory();
  for (const file of readdirSync(preset)) copyFileSync(path.join(preset, file), path.join(dir, file));
  for (const [file, text] of Object.entries(extra)) writeFileSync(path.join(dir, file), text);
  return dir;
}

const user = (content: string): ChatMessage => ({ role: "user", content });
const assistant = (content: string): ChatMessage => ({ role: "assistant", content });
const system = (content: string): ChatMessage => ({ role: "system", content });

/** HuggingFaceH4/zephyr-7b-beta's template, as its tokenizer_config.json has it (one statement per line). */
const ZEPHYR = [
  "{% for message in messages %}",
  "{% if message['role'] == 'user' %}",
  "{{ '<|user|>\n' + message['content'] + eos_token }}",
  "{% elif message['role'] == 'system' %}",
  "{{ '<|system|>\n' + message['content'] + eos_token }}",
  "{% elif message['role'] == 'assistant' %}",
  "{{ '<|assistant|>\n'  + message['content'] + eos_token }}",
  "{% endif %}",
  "{% if loop.last and add_generation_prompt %}",
  "{{ '<|assistant|>' }}",
  "{% endif %}",
  "{% endfor %}",
].join("\n");

/** ChatML, led by the bos token. */
const CHATML_WITH_BOS = String.raw`{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`;

/** mistralai/Mistral-7B-Instruct-v0.1's template: user and assistant only, alternating. */
const MISTRAL = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

describe("the default Falcon chat format", () => {
  it("one line per turn, System / User / Falcon, then the generation prompt", () => {
    const prompt = renderChat(defaultChatTemplate(), [
      system("You are terse."),
      user("What is 2 + 2?"),
      assistant("4."),
      user("And 3 + 3?"),
    ]);
    assert.equal(prompt, "System: You are terse.\nUser: What is 2 + 2?\nFalcon: 4.\nUser: And 3 + 3?\nFalcon:");
  });

  it("without the generation prompt, a developer message as a system one, text parts joined by newlines", () => {
    const template = defaultChatTemplate();
    assert.equal(template.source, DEFAULT_CHAT_TEMPLATE);
    assert.ok(template.isDefault);
    assert.equal(renderChat(template, [user("Hi")], { addGenerationPrompt: false }), "User: Hi");
    assert.equal(
      renderChat(template, [
        { role: "developer", content: "Answer in French." },
        { role: "user", content: [{ type: "text", text: "Line one" }, { type: "text", text: "line two" }] },
      ]),
      "System: Answer in French.\nUser: Line one\nline two\nFalcon:",
    );
  });

  it("message text that looks like Jinja is text, never evaluated", () => {
    assert.equal(
      renderChat(defaultChatTemplate(), [user("{{ raise_exception('no') }}{% for i in range(9) %}x{% endfor %}")]),
      "User: {{ raise_exception('no') }}{% for i in range(9) %}x{% endfor %}\nFalcon:",
    );
  });
});

describe("real-world templates", () => {
  it("Zephyr: statements on their own lines are trimmed, eos_token closes each turn", () => {
    const template = new ChatTemplate(ZEPHYR, { bosToken: "<s>", eosToken: "</s>" });
    assert.ok(!template.isDefault);
    assert.equal(
      renderChat(template, [system("You are a pirate."), user("Hello?")]),
      "<|system|>\nYou are a pirate.</s>\n<|user|>\nHello?</s>\n<|assistant|>\n",
    );
    assert.equal(renderChat(template, [user("Hello?")], { addGenerationPrompt: false }), "<|user|>\nHello?</s>\n");
  });

  it("ChatML with the bos token of tokenizer_config.json (an AddedToken object)", () => {
    const dir = withTokenizerConfig({
      chat_template: CHATML_WITH_BOS,
      bos_token: { content: "<|startoftext|>", lstrip: false, normalized: false, rstrip: false, single_word: false },
      eos_token: "<|im_end|>",
    });
    const template = loadChatTemplate(dir);
    assert.equal(template.bosToken, "<|startoftext|>");
    assert.equal(template.eosToken, "<|im_end|>");
    assert.equal(
      renderChat(template, [system("Be kind."), user("Hi"), assistant("Hello"), user("Bye")]),
      "<|startoftext|><|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("Mistral: raise_exception for turns out of order or a system role is a FalconInputError with its message", () => {
    const template = new ChatTemplate(MISTRAL, { bosToken: "<s>", eosToken: "</s>" });
    assert.equal(
      renderChat(template, [user("Hi"), assistant("Hello"), user("Bye")]),
      "<s>[INST] Hi [/INST]Hello</s> [INST] Bye [/INST]",
    );
    assert.throws(
      () => renderChat(template, [system("Be kind."), user("Hi")]),
      (error: unknown) => error instanceof FalconInputError && /Conversation roles must alternate/.test(error.message),
    );
    // Second turn: not a user turn, and not expected to be one, so the role check is what refuses it.
    assert.throws(
      () => renderChat(template, [user("Hi"), system("Be kind.")]),
      { name: "FalconInputError", message: "the chat template raised an exception: Only user and assistant roles are supported!" },
    );
    const onlyUsers = new ChatTemplate("{% for message in messages %}{% if message['role'] != 'user' %}{{ raise_exception('Only user roles are supported!') }}{% endif %}{{ message['content'] }}{% endfor %}");
    assert.throws(
      () => renderChat(onlyUsers, [user("Hi"), assistant("Hello")]),
      { name: "FalconInputError", message: "the chat template raised an exception: Only user roles are supported!" },
    );
  });

  it("a list of named templates: the one named default", () => {
    const dir = withTokenizerConfig({
      chat_template: [
        { name: "tool_use", template: "TOOLS {{ messages[0]['content'] }}" },
        { name: "default", template: "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}{% endfor %}" },
        { name: "rag", template: "RAG" },
      ],
    });
    assert.equal(renderChat(loadChatTemplate(dir), [user("a"), assistant("b")]), "<user>a<assistant>b");
  });

  it("the variables transformers passes: name, undefined special tokens, strftime_now", () => {
    const template = new ChatTemplate("{% if bos_token is defined %}BOS{% endif %}{{ messages[0].name }}|{{ strftime_now('%Y') }}");
    assert.equal(template.bosToken, undefined);
    const year = String(new Date().getFullYear());
    assert.equal(renderChat(template, [{ role: "user", content: "x", name: "ada" }]), `ada|${year}`);
  });
});

describe("message validation names the field", () => {
  const template = defaultChatTemplate();
  const cases: [string, unknown, string, RegExp][] = [
    ["not an array", { role: "user", content: "x" }, "messages", /must be an array, got an object/],
    ["empty", [], "messages", /at least one message/],
    ["too many", Array.from({ length: MAX_CHAT_MESSAGES + 1 }, () => user("x")), "messages", /4097 messages, more than the limit of 4096/],
    ["a message that is not an object", [user("x"), null], "messages[1]", /must be an object, got null/],
    ["an unknown role", [user("x"), user("y"), { role: "tool", content: "z" }], "messages[2].role", /got string "tool"/],
    ["a missing role", [{ content: "x" }], "messages[0].role", /got undefined/],
    ["a role of the wrong type", [{ role: 1, content: "x" }], "messages[0].role", /got number 1/],
    ["a missing content", [{ role: "assistant" }], "messages[0].content", /string or an array of text parts, got undefined/],
    ["a null content", [{ role: "assistant", content: null }], "messages[0].content", /got null/],
    ["a number content", [{ role: "user", content: 5 }], "messages[0].content", /got number 5/],
    ["too many parts", [{ role: "user", content: Array.from({ length: MAX_CHAT_CONTENT_PARTS + 1 }, () => ({ type: "text", text: "" })) }],
      "messages[0].content", /4097 parts, more than the limit of 4096/],
    ["a part that is not an object", [{ role: "user", content: [{ type: "text", text: "a" }, "b"] }], "messages[0].content[1]", /must be an object, got string "b"/],
    ["an image part", [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x" } }] }], "messages[0].content[0].type",
      /only "text" parts are supported, got string "image_url"/],
    ["a part without text", [{ role: "user", content: [{ type: "text" }] }], "messages[0].content[0].text", /must be a string, got undefined/],
    ["a name of the wrong type", [{ role: "user", content: "x", name: 7 }], "messages[0].name", /must be a string, got number 7/],
    ["too much text in one message", [user("x".repeat(MAX_CHAT_TEXT_CHARS + 1))], "messages[0].content", /exceeds the limit of 4194304 characters/],
    ["too much text over several messages", [user("x".repeat(MAX_CHAT_TEXT_CHARS / 2)), user("y"), user("z".repeat(MAX_CHAT_TEXT_CHARS / 2))],
      "messages[2].content", /exceeds the limit/],
    ["too much text in parts", [{ role: "user", content: [{ type: "text", text: "x".repeat(MAX_CHAT_TEXT_CHARS) }, { type: "text", text: "y" }] }],
      "messages[0].content[1].text", /exceeds the limit/],
  ];
  for (const [what, messages, param, message] of cases) {
    it(what, () => {
      assert.throws(
        () => renderChat(template, messages as ChatMessage[]),
        (error: unknown) => {
          assert.ok(error instanceof FalconChatMessageError, `${String(error)}`);
          assert.ok(error instanceof FalconInputError);
          assert.equal(error.param, param);
          assert.ok(error.message.startsWith(`${param}: `), error.message);
          assert.match(error.message, message);
          return true;
        },
      );
    });
  }

  it("options and the template argument are checked", () => {
    assert.throws(() => renderChat(template, [user("x")], { addGenerationPrompt: "yes" as unknown as boolean }),
      { name: "FalconInputError", message: 'addGenerationPrompt must be a boolean, got string "yes"' });
    assert.throws(() => renderChat(template, [user("x")], null as unknown as object), { name: "FalconInputError" });
    assert.throws(() => renderChat(DEFAULT_CHAT_TEMPLATE as unknown as ChatTemplate, [user("x")]),
      { name: "FalconInputError", message: /needs a ChatTemplate, got string/ });
  });
});

describe("templates that fail or run away", () => {
  const rejects = (source: string, message: RegExp) =>
    assert.throws(() => renderChat(new ChatTemplate(source), [user("x")]), (error: unknown) => {
      assert.ok(error instanceof FalconInputError, String(error));
      assert.match(error.message, message);
      return true;
    });

  it("a runtime error of the template is a FalconInputError with its message", () => {
    rejects("{{ messages[0]['content'] - 1 }}", /^the chat template failed: Unknown operator "-" between StringValue and IntegerValue/);
    rejects("{{ no_such_function() }}", /^the chat template failed: Cannot call something that is not a function/);
  });

  it("range() refuses a list over the limit before it allocates it, and so do lists built otherwise", () => {
    rejects("{% for i in range(1000000000000) %}{% endfor %}", /^range\(\) of 1000000000000 items is more than the limit of 65536/);
    rejects("{% for i in range(5, 100000000, 2) %}{% endfor %}", /^range\(\) of 49999998 items/);
    rejects("{{ range('a') }}", /^range\(\) takes one to three integers/);
    rejects("{{ (range(40000) + range(40000)) | length }}", /^the chat template built a list of 80000 items, more than the limit of 65536/);
  });

  it("nested loops are cut by the step limit, empty loop bodies included", () => {
    rejects("{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}", /^the chat template took more than 500000 evaluation steps/);
    rejects("{% for i in range(60000) if i > 0 %}{% for j in range(60000) if j > 0 %}{% endfor %}{% endfor %}", /more than 500000 evaluation steps/);
    rejects("{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}", /more than 500000 evaluation steps/);
  });

  it("unbounded recursion is cut by the depth limit", () => {
    rejects("{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}", /^the chat template nested evaluation deeper than 512 levels/);
  });

  it("a string doubled past the size limit", () => {
    rejects(
      "{% set ns = namespace(text='ab') %}{% for i in range(64) %}{% set ns.text = ns.text ~ ns.text %}{% endfor %}{{ ns.text }}",
      /^the chat template built a string of 33554432 characters, more than the limit of 16777216/,
    );
  });

  it("costly steps are cut by the time limit", () => {
    const started = performance.now();
    rejects(
      "{% set ns = namespace(text='a') %}{% for i in range(23) %}{% set ns.text = ns.text ~ ns.text %}{% endfor %}" +
        "{% for i in range(60000) %}{% if ns.text | replace('a', 'b') == '' %}{% endif %}{% endfor %}",
      /^the chat template took more than 2000 ms to render/,
    );
    assert.ok(performance.now() - started < 10_000);
  });

  it("a template renders normally after one that failed (no state carried over)", () => {
    rejects("{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}", /evaluation steps/);
    const template = new ChatTemplate("{% for i in range(3) %}{{ i }}{% endfor %}{{ messages | length }}");
    assert.equal(renderChat(template, Array.from({ length: MAX_CHAT_MESSAGES }, () => user("x"))), "0124096");
  });

  it("a template that does not parse, is too long or is not a string is a FalconConfigError", () => {
    assert.throws(() => new ChatTemplate("{% for message in messages %}{{ message }}"), {
      name: "FalconConfigError", message: /^the chat template does not parse: /,
    });
    assert.throws(() => new ChatTemplate("{{ 'unterminated }}"), { name: "FalconConfigError", message: /does not parse/ });
    // Nesting deep enough to overflow the parser's stack.
    assert.throws(() => new ChatTemplate(`{{ ${"(".repeat(100_000)} }}`), { name: "FalconConfigError", message: /does not parse/ });
    assert.throws(() => new ChatTemplate("x".repeat(MAX_CHAT_TEMPLATE_CHARS + 1)), {
      name: "FalconConfigError", message: /262145 characters, more than the limit of 262144/,
    });
    assert.throws(() => new ChatTemplate(42 as unknown as string), { name: "FalconConfigError", message: /must be a string, got number 42/ });
    assert.throws(() => new ChatTemplate("x", { eosToken: 2 as unknown as string }), { name: "FalconConfigError", message: /eosToken must be a string/ });
  });
});

describe("tokenizer_config.json", () => {
  it("no file, or no chat_template in it: the default format, with the file's special tokens", () => {
    assert.ok(loadChatTemplate(temporaryDirectory()).isDefault);
    const template = loadChatTemplate(withTokenizerConfig({ eos_token: "<|endoftext|>", chat_template: null }));
    assert.ok(template.isDefault);
    assert.equal(template.eosToken, "<|endoftext|>");
    assert.equal(template.bosToken, undefined);
  });

  const bad: [string, unknown, RegExp][] = [
    ["chat_template of the wrong type", { chat_template: 3 }, /"chat_template" must be a string or a list of \{name, template\}, got number 3/],
    ["chat_template as an object", { chat_template: { default: "x" } }, /"chat_template" must be a string or a list/],
    ["a list entry that is not an object", { chat_template: ["x"] }, /"chat_template"\[0\] must be an object with "name" and "template"/],
    ["a list entry without a name", { chat_template: [{ template: "x" }] }, /"chat_template"\[0\].name must be a string, got undefined/],
    ["a list entry whose template is not a string", { chat_template: [{ name: "default", template: ["x"] }] },
      /"chat_template"\[0\].template must be a string, got an array of 1/],
    ["a list without default", { chat_template: [{ name: "tool_use", template: "x" }] }, /a list with no template named "default"/],
    ["a list with two defaults", { chat_template: [{ name: "default", template: "x" }, { name: "default", template: "y" }] },
      /more than one template named "default"/],
    ["a template that does not parse", { chat_template: "{% if %}" }, /"chat_template": the chat template does not parse/],
    ["a template too long", { chat_template: "x".repeat(MAX_CHAT_TEMPLATE_CHARS + 1) }, /"chat_template": the chat template has 262145 characters/],
    ["bos_token of the wrong type", { chat_template: "x", bos_token: 1 }, /"bos_token" must be a string or an object with a "content" string, got number 1/],
    ["eos_token whose content is not a string", { eos_token: { content: 5 } }, /"eos_token".content must be a string, got number 5/],
    ["not an object", [], /expected a JSON object/],
    ["malformed JSON", "{\"chat_template\": ", /malformed JSON/],
  ];
  for (const [what, config, message] of bad) {
    it(what, () => {
      const dir = withTokenizerConfig(config);
      assert.throws(() => loadChatTemplate(dir), (error: unknown) => {
        assert.ok(error instanceof FalconPresetError, String(error));
        assert.ok(error.message.startsWith(path.join(dir, "tokenizer_config.json")), error.message);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  it("chat_template.jinja comes before tokenizer_config.json's chat_template, whose special tokens it uses", () => {
    const dir = withTokenizerConfig({ chat_template: "FROM THE CONFIG", bos_token: "<s>", eos_token: "</s>" });
    writeFileSync(path.join(dir, "chat_template.jinja"), "{{ bos_token }}{% for message in messages %}[{{ message['content'] }}]{{ eos_token }}{% endfor %}\n");
    const template = loadChatTemplate(dir);
    assert.equal(renderChat(template, [user("a"), assistant("b")]), "<s>[a]</s>[b]</s>");
    const alone = temporaryDirectory();
    writeFileSync(path.join(alone, "chat_template.jinja"), "{% for message in messages %}{{ message['role'] }} {% endfor %}");
    assert.equal(renderChat(loadChatTemplate(alone), [user("a"), assistant("b")]), "user assistant ");
  });

  it("a chat_template.jinja that does not parse, is too large or is not a regular file is a FalconPresetError naming it", () => {
    const cases: [(file: string) => void, RegExp][] = [
      [(file) => writeFileSync(file, "{% if messages %}"), /chat_template\.jinja: the chat template does not parse/],
      [(file) => writeFileSync(file, "x".repeat(4 * MAX_CHAT_TEMPLATE_CHARS + 1)), /chat_template\.jinja: 1048577 bytes exceeds the 1048576-byte limit/],
      [(file) => writeFileSync(file, "é".repeat(MAX_CHAT_TEMPLATE_CHARS + 1)), /chat_template\.jinja: the chat template has 262145 characters/],
      [(file) => execFileSync("mkfifo", [file]), /chat_template\.jinja: a FIFO, not a regular file/],
    ];
    for (const [write, message] of cases) {
      const dir = temporaryDirectory();
      write(path.join(dir, "chat_template.jinja"));
      assert.throws(() => loadChatTemplate(dir), (error: unknown) => {
        assert.ok(error instanceof FalconPresetError, String(error));
        assert.ok(error.message.startsWith(path.join(dir, "chat_template.jinja")), error.message);
        assert.match(error.message, message);
        return true;
      });
    }
  });

  it("a FIFO named tokenizer_config.json is refused without blocking", () => {
    const dir = temporaryDirectory();
    execFileSync("mkfifo", [path.join(dir, "tokenizer_config.json")]);
    assert.throws(() => loadChatTemplate(dir), { name: "FalconPresetError", message: /a FIFO, not a regular file/ });
  });
});

describe("FalconCausalLM.chatTemplate", () => {
  it("a Hugging Face checkpoint with a chat template in tokenizer_config.json", async () => {
    const dir = copyPreset(HF_CHECKPOINT, {
      "tokenizer_config.json": JSON.stringify({ chat_template: CHATML_WITH_BOS, bos_token: "<B>", eos_token: { content: "<E>" } }),
    });
    const lm = await FalconCausalLM.fromPreset(dir);
    try {
      assert.equal(lm.chatTemplate.source, CHATML_WITH_BOS);
      assert.equal(lm.chatTemplate.eosToken, "<E>");
      assert.equal(renderChat(lm.chatTemplate, [user("Hi")]), "<B><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    } finally {
      lm.dispose();
    }
  });

  it("a checkpoint without tokenizer_config.json and a keras-hub preset get the default format", async () => {
    for (const preset of [HF_CHECKPOINT, KERAS_PRESET]) {
      const lm = await FalconCausalLM.fromPreset(preset);
      try {
        assert.ok(lm.chatTemplate.isDefault, preset);
        assert.equal(renderChat(lm.chatTemplate, [user("Hi")]), "User: Hi\nFalcon:");
      } finally {
        lm.dispose();
      }
    }
  });

  it("a bad tokenizer_config.json fails fromPreset with a FalconPresetError naming the file", async () => {
    const dir = copyPreset(HF_CHECKPOINT, { "tokenizer_config.json": JSON.stringify({ chat_template: "{% endfor %}" }) });
    await assert.rejects(FalconCausalLM.fromPreset(dir), (error: unknown) => {
      assert.ok(error instanceof FalconPresetError, String(error));
      assert.match(error.message, /tokenizer_config\.json: "chat_template": the chat template does not parse/);
      return true;
    });
  });

  it("the constructor takes a ChatTemplate and defaults to the Falcon format", async () => {
    const lm = await FalconCausalLM.fromPreset(KERAS_PRESET);
    try {
      const zephyr = new ChatTemplate(ZEPHYR, { eosToken: "</s>" });
      assert.equal(new FalconCausalLM(lm.backbone, undefined, { chatTemplate: zephyr }).chatTemplate, zephyr);
      assert.ok(new FalconCausalLM(lm.backbone).chatTemplate.isDefault);
      assert.throws(() => new FalconCausalLM(lm.backbone, undefined, { chatTemplate: ZEPHYR as unknown as ChatTemplate }), FalconConfigError);
    } finally {
      lm.dispose();
    }
  });
});

