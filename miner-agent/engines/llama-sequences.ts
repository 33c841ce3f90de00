import type { LlamaContext, LlamaContextSequence } from "node-llama-cpp";

/**
 * The context's sequences, each handed to a job with an empty KV state.
 *
 * Why a sequence is cleared when its job ends, and why clearing pauses the others: node-llama-cpp
 * erases a sequence's cells under the context lock, and its batch loop keeps that lock for as long
 * as any sequence has a decode queued. A clear at the start of a job therefore waited until every
 * other job paused at the same time, which with staggered arrivals took hundreds of milliseconds
 * before the first token. Here a sequence is cleared as its job ends, and while any clear is
 * pending every sequence waits before queueing its next decode: the batch loop finishes its
 * current step, the clear runs, generation goes on. One decode step of pause per finished job.
 */
export class SequencePool {
  private readonly cleared: LlamaContextSequence[];
  private readonly clearing = new Set<Promise<void>>();
  private readonly waiting: ((sequence: LlamaContextSequence) => void)[] = [];

  constructor(context: LlamaContext, size: number, private readonly onClearError: (err: unknown) => void) {
    this.cleared = Array.from({ length: size }, () => gateEvaluations(context.getSequence(), () => this.pendingClears()));
  }

  /**
   * A sequence for a job, or null when every one is in a job. A sequence whose clear is still
   * pending is waited for. One whose clear failed comes back uncleared (`nextTokenIndex > 0`).
   */
  take(): Promise<LlamaContextSequence> | LlamaContextSequence | null {
    const sequence = this.cleared.pop();
    if (sequence) return sequence;
    if (this.waiting.length >= this.clearing.size) return null;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** A sequence back from its job: cleared now (unless its job evaluated nothing), then handed to a waiting job or kept. */
  give(sequence: LlamaContextSequence): void {
    if (sequence.nextTokenIndex === 0) return this.handOut(sequence);
    const clear: Promise<void> = sequence.clearHistory().catch(this.onClearError).then(() => {
      this.clearing.delete(clear);
      this.handOut(sequence);
    });
    this.clearing.add(clear);
  }

  private handOut(sequence: LlamaContextSequence): void {
    const waiter = this.waiting.shift();
    if (waiter) waiter(sequence);
    else this.cleared.push(sequence);
  }

  private pendingClears(): Promise<unknown> | undefined {
    return this.clearing.size > 0 ? Promise.all(this.clearing) : undefined;
  }
}

type Evaluation = ReturnType<LlamaContextSequence["evaluateWithMetadata"]>;
type NextInput = Parameters<Evaluation["next"]>[0];

/**
 * Makes each of the sequence's evaluations wait for `pause()` before it asks for the next token,
 * which is when the sequence would queue its next decode. The instance's `evaluateWithMetadata`
 * is wrapped: in node-llama-cpp 3.21.1 (pinned) `evaluate`, and so LlamaChat, call it through
 * `this`. The llama-cpp engine test fails if a job stops pausing on either path.
 */
function gateEvaluations(sequence: LlamaContextSequence, pause: () => Promise<unknown> | undefined): LlamaContextSequence {
  const evaluateWithMetadata = sequence.evaluateWithMetadata;
  const gated = (...args: Parameters<LlamaContextSequence["evaluateWithMetadata"]>): Evaluation =>
    gatedEvaluation(evaluateWithMetadata.apply(sequence, args), pause);
  sequence.evaluateWithMetadata = gated as LlamaContextSequence["evaluateWithMetadata"];
  return sequence;
}

async function* gatedEvaluation(inner: Evaluation, pause: () => Promise<unknown> | undefined): Evaluation {
  let input: NextInput;
  try {
    for (;;) {
      for (let wait = pause(); wait; wait = pause()) await wait;
      const next = await inner.next(input);
      if (next.done) return next.value;
      input = yield next.value;
    }
  } finally {
    await inner.return(undefined);
  }
}
