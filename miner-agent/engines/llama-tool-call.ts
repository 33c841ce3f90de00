import { LlamaGrammarEvaluationState } from "node-llama-cpp";
import type { GbnfJsonSchema, LlamaContextSequence, LlamaGrammar, LlamaModel, Token } from "node-llama-cpp";
import type { FinishReason, SamplingParams, ToolDefinition } from "../../protocol/index.ts";
import { newToolCallId, parametersSchema } from "./llama-chat-history.ts";
import { generateTokens, TrailingWhitespace } from "./llama-loop.ts";
import type { GenerateHooks } from "./types.ts";

export interface ForcedToolCallOptions {
  model: LlamaModel;
  sequence: LlamaContextSequence;
  /** The rendered prompt (tools documented in it). */
  input: Token[];
  maxTokens: number;
  params: SamplingParams;
  /** The tools the call may use: all of them (`required`) or the named one. */
  tools: readonly ToolDefinition[];
  hooks: GenerateHooks;
  grammarFor(schema: GbnfJsonSchema): Promise<LlamaGrammar>;
}

/**
 * One tool call the request requires. With several tools the model first picks the name under
 * a grammar of the names (a JSON string), then writes the arguments under the chosen tool's
 * parameter schema: the grammar is switched between tokens, so it is one evaluation of the
 * prompt. The call's first piece (id, name, empty arguments) goes out once the name is known;
 * each argument piece is streamed as it is sampled, with the tokens it took.
 */
export async function generateForcedToolCall(opts: ForcedToolCallOptions): Promise<{ finishReason: FinishReason; generated: number }> {
  const { model, hooks, tools } = opts;
  const argumentGrammars = new Map<string, LlamaGrammar>();
  for (const t of tools) argumentGrammars.set(t.name, await opts.grammarFor(parametersSchema(t)));
  const single = tools.length === 1 ? tools[0]!.name : undefined;
  const nameGrammar = single ? undefined : await opts.grammarFor({ enum: tools.map((t) => t.name) });
  const stateOf = (grammar: LlamaGrammar) => new LlamaGrammarEvaluationState({ model, grammar });
  let nameState = nameGrammar ? stateOf(nameGrammar) : undefined;
  let argumentState = single ? stateOf(argumentGrammars.get(single)!) : undefined;
  let nameText = "";
  let nameTokens = 0;
  const header = (name: string, tokens: number) => hooks.onToolCall?.({ index: 0, id: newToolCallId(), name, arguments: "" }, tokens);
  if (single) header(single, 0);
  const trailing = new TrailingWhitespace((text, n) => {
    hooks.onToolCall?.({ index: 0, arguments: text }, n);
    return false;
  });
  const params: SamplingParams = { ...opts.params };
  delete params.logprobs; // tool calls have no content logprobs
  const outcome = await generateTokens(model, opts.sequence, opts.input, {
    params,
    maxTokens: opts.maxTokens,
    signal: hooks.signal,
    freshText: true,
    grammar: () => nameState ?? argumentState,
    onPiece: (text, n) => {
      if (nameState === undefined) return trailing.push(text, n, undefined);
      nameText += text;
      nameTokens += n;
      const name = completeJsonString(nameText);
      const grammar = name === null ? undefined : argumentGrammars.get(name);
      if (name !== null && grammar) {
        nameState = undefined;
        argumentState = stateOf(grammar);
        header(name, nameTokens);
      }
      return false;
    },
  });
  // Whitespace the grammar allowed after the arguments is dropped, but it was generated.
  if (trailing.heldTokens > 0 && argumentState) hooks.onToolCall?.({ index: 0, arguments: "" }, trailing.heldTokens);
  return { finishReason: outcome.finishReason === "stop" ? "tool_calls" : outcome.finishReason, generated: outcome.generated };
}

/** The value of a complete JSON string literal (`"name"`), or null while it is incomplete. */
function completeJsonString(text: string): string | null {
  const t = text.trim();
  if (t.length < 2 || !t.startsWith('"') || !t.endsWith('"') || t.endsWith('\\"')) return null;
  try {
    const v: unknown = JSON.parse(t);
    return typeof v === "string" ? v : null;
  } catch {
    return null;
  }
}
