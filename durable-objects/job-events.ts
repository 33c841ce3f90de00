import { JobEvent } from "../protocol/index.ts";

/**
 * What a MinerSession streams to the Worker for one job: the agent's chunk/done/error frames,
 * already validated, one JSON object per line.
 */
export { JobEvent };

const encoder = new TextEncoder();

export function encodeJobEvent(event: JobEvent): Uint8Array {
  return encoder.encode(JSON.stringify(event) + "\n");
}

/** An event already in JSON text (one line) as it goes on the stream. */
export function encodeLine(json: string): Uint8Array {
  return encoder.encode(json + "\n");
}

/** Reads job events from a MinerSession stream, line by line. */
export class JobEventReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  private queue: JobEvent[] = [];

  constructor(
    stream: ReadableStream<Uint8Array>,
    /** A job silent for this long ends with an `upstream_timeout` error event. */
    private readonly idleTimeoutMs = Infinity,
  ) {
    this.reader = stream.getReader();
  }

  /**
   * The next event, or null when the stream ended without one. Nothing within `timeoutMs`
   * (default: the idle timeout) gives an `upstream_timeout` error event.
   */
  async next(timeoutMs = this.idleTimeoutMs): Promise<JobEvent | null> {
    if (this.queue.length > 0 || timeoutMs === Infinity) return this.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = new Promise<JobEvent>((resolve) => {
      timer = setTimeout(
        () =>
          resolve({
            type: "error",
            id: "",
            code: "upstream_timeout",
            message: `The model produced nothing for ${Math.round(timeoutMs / 1000)} s.`,
            retryable: false,
          }),
        Math.max(0, timeoutMs),
      );
    });
    try {
      return await Promise.race([this.read(), idle]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async read(): Promise<JobEvent | null> {
    while (this.queue.length === 0) {
      const { done, value } = await this.reader.read();
      if (done) return null;
      this.buffer += this.decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        // The session validated each frame against JobEvent before streaming it (unknown fields
        // may remain; nothing reads them), so the Worker does not validate it again.
        if (line) this.queue.push(JSON.parse(line) as JobEvent);
      }
    }
    return this.queue.shift() ?? null;
  }

  async cancel(reason?: unknown): Promise<void> {
    await this.reader.cancel(reason).catch(() => undefined);
  }
}
