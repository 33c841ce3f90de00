import type { TokenLogprob } from "../../protocol/index.ts";

/**
 * Streams generated text to `onDelta`, holding back any tail that could be the start of a stop
 * string, and cutting the output before the first stop string. Every delta carries >= 1 token.
 */
export class DeltaStream {
  private pendingText = "";
  private pendingTokens = 0;
  /** Log probabilities of the pending tokens (when asked for), in order. */
  private pendingLogprobs: TokenLogprob[] = [];
  /** Tokens fed so far (including hidden ones, e.g. thought segments). */
  consumedTokens = 0;
  emittedDeltas = 0;
  stopped = false;

  constructor(
    private readonly stops: readonly string[],
    private readonly onDelta: (text: string, tokens: number, logprobs?: TokenLogprob[]) => void,
  ) {}

  /** Feeds one generated piece; returns true once a stop string matched (generation must end). */
  push(text: string, tokens: number, logprobs?: readonly TokenLogprob[]): boolean {
    if (this.stopped) return true;
    if (logprobs) this.pendingLogprobs.push(...logprobs);
    this.consumedTokens += tokens;
    this.pendingText += text;
    this.pendingTokens += tokens;
    const stopAt = this.firstStopIndex();
    if (stopAt >= 0) {
      this.stopped = true;
      this.release(stopAt, this.pendingTokens);
      return true;
    }
    const safe = this.pendingText.length - this.heldBackLength();
    if (safe === this.pendingText.length) this.release(safe, this.pendingTokens);
    else if (this.pendingTokens > 1) this.release(safe, this.pendingTokens - 1); // 1 token stays with the held text
    return false;
  }

  /** Counts tokens that produce no visible text (e.g. reasoning segments). */
  skip(tokens: number): void {
    this.consumedTokens += tokens;
  }

  /** End of generation without a stop match: release whatever was held back. */
  flush(): void {
    if (!this.stopped) this.release(this.pendingText.length, Math.max(1, this.pendingTokens));
  }

  private release(length: number, tokens: number): void {
    if (length === 0 || tokens === 0) return;
    const text = this.pendingText.slice(0, length);
    this.pendingText = this.pendingText.slice(length);
    this.pendingTokens = Math.max(0, this.pendingTokens - tokens);
    this.emittedDeltas++;
    if (this.pendingLogprobs.length === 0) return this.onDelta(text, tokens);
    const logprobs = this.pendingLogprobs.splice(0, this.pendingTokens === 0 ? this.pendingLogprobs.length : tokens);
    this.onDelta(text, tokens, logprobs);
  }

  private firstStopIndex(): number {
    let first = -1;
    for (const stop of this.stops) {
      const i = this.pendingText.indexOf(stop);
      if (i >= 0 && (first < 0 || i < first)) first = i;
    }
    return first;
  }

  /** Length of the longest suffix of the pending text that is a proper prefix of a stop string. */
  private heldBackLength(): number {
    let held = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, this.pendingText.length); k > held; k--) {
        if (this.pendingText.endsWith(stop.slice(0, k))) {
          held = k;
          break;
        }
      }
    }
    return held;
  }
}
