import type { ExportEvent } from "../formats.js";

/** The sink cannot take events now (down, timing out, refusing the token): retry later, nothing counts as delivered. */
export class SinkDownError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SinkDownError";
  }
}

export interface Sink {
  readonly name: "file" | "hec" | "syslog";
  /**
   * Delivers the events in order. Resolves once the sink has accepted them, with the events it refused as
   * malformed (index in `events` → the sink's answer); the others are accepted. Throws SinkDownError when
   * the sink is unavailable.
   */
  send(events: readonly ExportEvent[]): Promise<Map<number, string>>;
  close(): Promise<void>;
}
