import type { JobSpec } from "../../protocol/index.ts";

/** Prefixes shorter than this (characters) are not worth routing for. */
const MIN_PREFIX_CHARS = 64;
/** Only the longest boundaries are sent to the router. */
const MAX_PREFIXES = 8;

/**
 * Hashes of the request's leading parts, shortest first, for KV-cache affinity: for a chat, the
 * conversation rendered up to each message boundary (so the next turn of the same conversation,
 * which repeats all of it, matches); for a completion, the prompt at doubling lengths. The hash
 * is incremental (two 32-bit FNV-1a lanes), one pass over the text.
 */
export function prefixHashes(spec: JobSpec): string[] {
  const h = new Fnv();
  const out: string[] = [];
  if (spec.kind === "chat") {
    for (const m of spec.messages) {
      h.update(m.role);
      h.update("\u0000");
      h.update(m.content);
      h.update("\u0001");
      if (h.length >= MIN_PREFIX_CHARS) out.push(h.digest());
    }
  } else {
    let pos = 0;
    for (let cut = 256; ; cut *= 2) {
      const end = Math.min(cut, spec.prompt.length);
      h.update(spec.prompt.slice(pos, end));
      pos = end;
      if (end >= MIN_PREFIX_CHARS) out.push(h.digest());
      if (end === spec.prompt.length) break;
    }
  }
  return out.slice(-MAX_PREFIXES);
}

/**
 * Whether a request with `prefixes` may take over the slot of a finished request that had
 * `held`, going to that instance without asking the router: only where the router's prefix
 * affinity would send it there too, as far as the two requests show. That is when it has nothing
 * to route by, when it continues (or repeats) the conversation that held the slot, or when it
 * starts like that one and nothing else of it can be cached anywhere: only its own whole prompt
 * is new. A conversation with history of its own (the next turn of another conversation behind
 * the same system prompt) goes to the router, which knows where that history is.
 */
export function mayTakeOver(held: readonly string[], prefixes: readonly string[]): boolean {
  const longest = prefixes.at(-1);
  if (longest === undefined) return true;
  const heldLongest = held.at(-1);
  if (heldLongest !== undefined && prefixes.includes(heldLongest)) return true;
  if (held.includes(longest)) return true;
  return prefixes.length >= 2 && prefixes.slice(0, -1).every((p) => held.includes(p));
}

class Fnv {
  private a = 0x811c9dc5;
  private b = 0x01000193 ^ 0x5bd1e995;
  length = 0;

  update(s: string): void {
    let { a, b } = this;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x01000193) ^ (b >>> 15);
    }
    this.a = a;
    this.b = b;
    this.length += s.length;
  }

  digest(): string {
    return (this.a >>> 0).toString(16).padStart(8, "0") + (this.b >>> 0).toString(16).padStart(8, "0");
  }
}
