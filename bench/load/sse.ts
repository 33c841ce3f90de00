interface ChunkShape {
  error?: { message?: string } | string;
  usage?: { completion_tokens?: number } | null;
  choices?: { delta?: { content?: string | null }; text?: string; finish_reason?: string | null }[];
}

/**
 * Scans an OpenAI-style SSE stream as it arrives, doing as little work per event as it can:
 * every event is JSON-parsed until the first content token (so that token is timestamped when
 * its bytes arrive); after it, only events that may carry usage or an error are parsed.
 */
export class SseScanner {
  private buffer = "";
  /** When the first non-empty content token arrived (the `now` given to `push`). */
  firstTokenAt: number | undefined;
  /** `usage.completion_tokens` of the usage chunk, when the stream had one. */
  usageTokens: number | undefined;
  /** Events that carried content (a fallback token count when there is no usage chunk). */
  contentEvents = 0;
  /** Saw `data: [DONE]`. */
  done = false;
  /** The first error the stream reported (an `error` object or `finish_reason: "error"`). */
  error: string | undefined;

  push(text: string, now: number): void {
    const buffer = this.buffer + text;
    const normalized = buffer.includes("\r") ? buffer.replace(/\r\n?/g, "\n") : buffer;
    let start = 0;
    for (let end = normalized.indexOf("\n\n"); end >= 0; end = normalized.indexOf("\n\n", start)) {
      this.event(normalized.slice(start, end), now);
      start = end + 2;
    }
    this.buffer = normalized.slice(start);
  }

  /** Completion tokens delivered: the usage chunk's count, else the content events seen. */
  get tokens(): number {
    return this.usageTokens ?? this.contentEvents;
  }

  private event(block: string, now: number): void {
    let data: string | undefined;
    for (const line of block.split("\n")) {
      if (!line.startsWith("data:")) continue;
      const value = line.slice(line.startsWith("data: ") ? 6 : 5);
      data = data === undefined ? value : `${data}\n${value}`;
    }
    if (data === undefined || this.done) return;
    if (data === "[DONE]") {
      this.done = true;
      return;
    }
    const mayMatter = this.firstTokenAt === undefined || data.includes('"usage":{') || data.includes('"error"');
    if (!mayMatter) {
      if (data.includes('"finish_reason":null')) this.contentEvents++;
      return;
    }
    let chunk: ChunkShape;
    try {
      chunk = JSON.parse(data) as ChunkShape;
    } catch {
      this.error ??= `event is not JSON: ${data.slice(0, 120)}`;
      return;
    }
    if (chunk.error) {
      this.error ??= typeof chunk.error === "string" ? chunk.error : (chunk.error.message ?? JSON.stringify(chunk.error));
    }
    if (typeof chunk.usage?.completion_tokens === "number") this.usageTokens = chunk.usage.completion_tokens;
    for (const choice of chunk.choices ?? []) {
      if (choice.finish_reason === "error") this.error ??= "stream ended with finish_reason \"error\"";
      const content = choice.delta?.content ?? choice.text;
      if (typeof content === "string" && content !== "") {
        this.contentEvents++;
        this.firstTokenAt ??= now;
      }
    }
  }
}
