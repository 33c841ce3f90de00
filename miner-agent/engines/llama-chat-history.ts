import { randomBytes } from "node:crypto";
import type { ChatHistoryItem, ChatModelFunctionCall, ChatModelFunctions, ChatModelResponse, GbnfJsonSchema } from "node-llama-cpp";
import type { ChatMessage, ToolDefinition } from "../../protocol/index.ts";
import { toGrammarSchema } from "../../protocol/json-schema.ts";
import { EngineError } from "./types.ts";

/** A tool without parameters takes an empty object. */
const NO_PARAMETERS = { type: "object", properties: {} } as const;

/** A tool call id in OpenAI's style (`call_` and 24 random characters). */
export function newToolCallId(): string {
  return `call_${randomBytes(18).toString("base64url")}`;
}

/** A client's JSON Schema as a node-llama-cpp grammar schema (the gateway checked it already). */
export function grammarSchema(schema: unknown, what: string): GbnfJsonSchema {
  const r = toGrammarSchema(schema);
  if (!r.ok) throw new EngineError(`${what}: invalid schema at '${r.path}': ${r.message}`, false, "invalid_request");
  return r.schema as GbnfJsonSchema;
}

export function parametersSchema(tool: ToolDefinition): GbnfJsonSchema {
  return tool.parameters ? grammarSchema(tool.parameters, `tool '${tool.name}'`) : NO_PARAMETERS;
}

/** The tools as node-llama-cpp functions (documented in the prompt by the chat wrapper). */
export function functionsOf(tools: readonly ToolDefinition[]): ChatModelFunctions {
  return Object.fromEntries(
    tools.map((t) => [t.name, { ...(t.description !== undefined ? { description: t.description } : {}), params: parametersSchema(t) }]),
  );
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * OpenAI messages as node-llama-cpp chat history. An assistant turn's tool calls and the tool
 * turns answering them become function calls with their results, which the chat wrapper
 * renders in the model's own syntax.
 */
export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const results = new Map<string, string>();
  for (const m of messages) if (m.role === "tool" && m.toolCallId !== undefined) results.set(m.toolCallId, m.content);
  const answered = new Set<string>();
  const history: ChatHistoryItem[] = [];
  for (const m of messages) {
    if (m.role === "user") history.push({ type: "user", text: m.content });
    else if (m.role === "assistant") {
      const response: ChatModelResponse["response"] = m.content ? [m.content] : [];
      for (const call of m.toolCalls ?? []) {
        answered.add(call.id);
        const item: ChatModelFunctionCall = {
          type: "functionCall",
          name: call.name,
          params: parseArguments(call.arguments),
          result: results.get(call.id) ?? null,
        };
        response.push(item);
      }
      history.push({ type: "model", response });
    } else if (m.role === "tool") {
      // Results are rendered with their calls; one without a call is shown as text.
      if (m.toolCallId === undefined || !answered.has(m.toolCallId)) history.push({ type: "user", text: m.content });
    } else history.push({ type: "system", text: m.content });
  }
  // A trailing assistant message is continued; otherwise a new (empty) response is started.
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  return history;
}
