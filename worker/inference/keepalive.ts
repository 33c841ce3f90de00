import { ERROR_CODES } from "../../protocol/index.ts";
import { ApiError } from "../errors.ts";
import { SSE_DONE, errorChunk, sseEvent, type ResponseMeta } from "../openai/format.ts";

/** An SSE comment: clients ignore it; proxies see a live stream; a failed write shows the client left. */
export const KEEPALIVE = new TextEncoder().encode(": keep-alive\n\n");

export interface KeepAliveOptions<T> {
  meta: ResponseMeta;
  headers: Record<string, string>;
  /** The dispatch in flight: resolves with the job once it produced its first event. */
  pending: Promise<T>;
  /** Relay the job once it is there (its SSE response is piped into this one). */
  start: (job: T) => { response: Response; done: Promise<void> };
  intervalMs: number;
}

/**
 * A stream whose first token is slow: answer now with a 200 SSE response carrying comment
 * keep-alives (so proxies and OpenRouter do not time out), and splice in the job's stream when it
 * starts. Retries before the first token stay invisible (only comments were sent); if the job
 * cannot start at all, the error arrives as an OpenAI error chunk, as after a stream has started.
 * `done` settles when everything, job included, is over.
 */
export function keepAliveStream<T>(opts: KeepAliveOptions<T>): { response: Response; done: Promise<void> } {
  // Native to workerd, so a client that left makes the writes fail (see relayStream).
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  const timer = setInterval(() => void writer.write(KEEPALIVE).catch(() => undefined), opts.intervalMs);
  void writer.write(KEEPALIVE).catch(() => undefined);
  const done = opts.pending.then(
    async (job) => {
      clearInterval(timer);
      const relay = opts.start(job);
      // Forward the job's stream by hand (one writer throughout); if the client is gone the write
      // fails and cancelling the job's stream cancels the job.
      const reader = relay.response.body!.getReader();
      const forward = async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            await writer.write(value);
          }
          await writer.close();
        } catch {
          await reader.cancel().catch(() => undefined);
        }
      };
      await Promise.all([forward(), relay.done]);
    },
    async (err: unknown) => {
      clearInterval(timer);
      const e = err instanceof ApiError ? err : new ApiError("internal_error", "The request failed before it started.");
      await writer.write(sseEvent(errorChunk(opts.meta, { message: e.message, type: ERROR_CODES[e.code].type, code: e.code }))).catch(() => undefined);
      await writer.write(SSE_DONE).catch(() => undefined);
      await writer.close().catch(() => undefined);
    },
  );
  const response = new Response(readable, {
    headers: { ...opts.headers, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" },
  });
  return { response, done };
}
