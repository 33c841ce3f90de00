/**
 * A one-shot timer of an isolate's shared state (a wallet, a batch) that any request may arm or
 * cancel. workerd keeps timers per request: clearTimeout from another request than the one that
 * armed it does not reach it, and the callback would still run, late, in the arming request,
 * which may by then be ending (its I/O then never completes). So a cancelled timer is also
 * disowned: when it fires anyway, it does nothing.
 */
export class SharedTimer {
  private handle: ReturnType<typeof setTimeout> | null = null;
  private generation = 0;

  /** Run `fn` in `ms` unless it is already armed (the earlier one stands) or cancelled meanwhile. */
  arm(ms: number, fn: () => void): void {
    if (this.handle !== null) return;
    const generation = ++this.generation;
    this.handle = setTimeout(() => {
      if (generation !== this.generation) return;
      this.handle = null;
      fn();
    }, ms);
  }

  cancel(): void {
    if (this.handle === null) return;
    clearTimeout(this.handle);
    this.handle = null;
    this.generation++;
  }
}
