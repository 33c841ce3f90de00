import { MAX_FRAME_BYTES } from "../protocol/index.ts";

/** Where frames go: a WebSocket. */
export interface FrameSink {
  send(message: string): void;
}

/**
 * Frames for agents that take several per message (their auth said `lines`). The jobs that a
 * session starts in one turn of its event loop go out as one message at the end of the turn, one
 * frame per line: under load, the requests that arrive together cost the runtime and the agent
 * one message, not one each (bench:ab small: +8.9% requests/s, workerd CPU per request -8.5%,
 * agent CPU -15%).
 *
 * Any other frame for the socket goes at once, after whatever is waiting, so the agent sees
 * frames in the order they were sent (a job before its cancel).
 */
export class FrameBatch {
  private readonly waiting = new Map<FrameSink, { lines: string[]; chars: number }>();

  /** Send `text` with the socket's next batch (when `lines`), or at once. */
  add(ws: FrameSink, text: string, lines: boolean): void {
    if (!lines) return this.now(ws, text);
    let batch = this.waiting.get(ws);
    if (batch && batch.chars + 1 + text.length > MAX_BATCH_CHARS) {
      this.flush(ws);
      batch = undefined;
    }
    if (!batch) {
      batch = { lines: [], chars: -1 };
      this.waiting.set(ws, batch);
      setTimeout(() => this.flush(ws), 0);
    }
    batch.lines.push(text);
    batch.chars += 1 + text.length;
  }

  /** Send `text` now, after the socket's waiting frames. */
  now(ws: FrameSink, text: string): void {
    this.flush(ws);
    ws.send(text);
  }

  /** Forget the socket's waiting frames (its session ended; its jobs are failed with it). */
  drop(ws: FrameSink): void {
    this.waiting.delete(ws);
  }

  private flush(ws: FrameSink): void {
    const batch = this.waiting.get(ws);
    if (!batch) return;
    this.waiting.delete(ws);
    try {
      ws.send(batch.lines.join("\n"));
    } catch {
      // The socket closed meanwhile: webSocketClose fails the session's jobs.
    }
  }
}

/**
 * A batch's bound in UTF-16 code units: one takes at most 3 bytes in UTF-8, so a batch stays
 * within the frame bound the agent enforces. A single frame over it goes alone, as it would unbatched.
 */
const MAX_BATCH_CHARS = Math.floor(MAX_FRAME_BYTES / 3);
