/** Reads a `text/event-stream` body with fetch: events with their `event:`,
 * `id:` and one-line `data:`, comments and `retry:` skipped. */
export interface SseFrame {
  event?: string;
  id?: string;
  data?: string;
}

/** Parses the frames of an SSE body as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const frame: SseFrame = {};
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) frame.event = line.slice(7);
          else if (line.startsWith("id: ")) frame.id = line.slice(4);
          else if (line.startsWith("data: ")) frame.data = line.slice(6);
        }
        if (frame.data !== undefined) yield frame;
      }
    }
  } finally {
    reader.releaseLock();
  }
}
