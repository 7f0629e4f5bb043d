/** Reads a `text/event-stream` body as the HTML standard's event-stream
 * parser does: lines end with CRLF, LF or CR; `data:` lines join with LF;
 * comments (`:`) are skipped; `id:` sets the last event id (kept across
 * events); `retry:` sets the reconnection time; an event is dispatched at
 * a blank line, and one left unfinished at the end of the stream is
 * dropped. */
export interface SseFrame {
  /** The event type (`message` when the event named none). */
  event: string;
  /** The data lines joined with LF. */
  data: string;
  /** The last event id seen so far on this stream, if any. */
  id?: string;
  /** The reconnection time the stream asked for, if it did. */
  retry?: number;
}

/** An incremental event-stream parser: feed it text, take the events. */
export class SseParser {
  private buffer = "";
  private started = false;
  private afterCr = false;
  private eventType = "";
  private data: string[] = [];
  private lastId?: string;
  private retry?: number;

  /** Parses `text` (the next decoded piece of the body); returns the
   * events it completed. */
  push(text: string): SseFrame[] {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    // A CR ends a line; an LF right after it belongs to the same ending,
    // even when the two arrive in different pieces.
    if (this.afterCr && text.startsWith("\n")) text = text.slice(1);
    this.afterCr = false;
    this.buffer += text;
    const frames: SseFrame[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 < this.buffer.length) {
          if (this.buffer.charCodeAt(i + 1) === 10) i++;
        } else {
          this.afterCr = true;
        }
      }
      start = i + 1;
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    this.buffer = this.buffer.slice(start);
    return frames;
  }

  /** Handles one line; returns the event a blank line completes. */
  private line(line: string): SseFrame | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\u0000")) this.lastId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return undefined;
  }

  private dispatch(): SseFrame | undefined {
    const data = this.data;
    const type = this.eventType;
    this.data = [];
    this.eventType = "";
    if (data.length === 0) return undefined;
    const frame: SseFrame = { event: type || "message", data: data.join("\n") };
    if (this.lastId !== undefined) frame.id = this.lastId;
    if (this.retry !== undefined) frame.retry = this.retry;
    return frame;
  }
}

/** Parses the events of an SSE body as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.releaseLock();
  }
}
