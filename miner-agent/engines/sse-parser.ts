/**
 * Incremental SSE parser (WHATWG event-stream rules, `data` field only): accepts text in
 * arbitrary pieces, returns the data payload of every event completed by this piece.
 */
export class SseParser {
  private buffer = "";
  private data: string[] = [];

  push(text: string): string[] {
    const buffer = this.buffer + text;
    const events: string[] = [];
    // Lines end at CRLF, LF or CR. The next CR and LF are each searched for once, and again only
    // when passed (most servers send no CR at all: one scan of the text finds none).
    let start = 0;
    let cr = buffer.indexOf("\r");
    let lf = buffer.indexOf("\n");
    for (;;) {
      if (cr !== -1 && cr < start) cr = buffer.indexOf("\r", start);
      if (lf !== -1 && lf < start) lf = buffer.indexOf("\n", start);
      let end: number;
      let next: number;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        // A lone trailing CR may be the first half of a CRLF split across reads.
        if (cr + 1 === buffer.length) break;
        end = cr;
        next = lf === cr + 1 ? cr + 2 : cr + 1;
      } else if (lf !== -1) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      this.line(buffer.slice(start, end), events);
      start = next;
    }
    this.buffer = buffer.slice(start);
    return events;
  }

  /** End of stream: dispatch an event left without its terminating blank line. */
  end(): string[] {
    const events: string[] = [];
    if (this.buffer !== "") this.line(this.buffer.replace(/\r$/, ""), events);
    this.buffer = "";
    this.line("", events);
    return events;
  }

  private line(line: string, events: string[]): void {
    if (line === "") {
      if (this.data.length > 0) events.push(this.data.length === 1 ? this.data[0]! : this.data.join("\n"));
      this.data = [];
    } else if (line.startsWith("data")) {
      const rest = line.slice(4);
      if (rest === "") this.data.push("");
      else if (rest.startsWith(":")) this.data.push(rest.slice(rest.startsWith(": ") ? 2 : 1));
    } // comments (":...") and other fields (event, id, retry) are ignored
  }
}
