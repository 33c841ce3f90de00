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
