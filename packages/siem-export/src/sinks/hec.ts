/**
 * Splunk HTTP Event Collector: one POST per batch (events concatenated, optionally gzip), `Authorization:
 * Splunk <token>`. 2xx accepts the batch. A 400 names a malformed event (`invalid-event-number`, or found
 * by halving the batch): that event is refused with HEC's answer and the rest is sent again. Anything else
 * (5xx, 401/403, a network error, a timeout) means the sink is down: the whole batch is retried later.
 */
import { promisify } from "node:util";
import { gzip } from "node:zlib";

import type { SinkFormat } from "../config.js";
import { hecEvent } from "../formats.js";
import type { ExportEvent } from "../formats.js";
import { SinkDownError } from "./sink.js";
import type { Sink } from "./sink.js";

const gzipAsync = promisify(gzip);

export interface HecSinkOptions {
  url: string;
  token: string;
  format: SinkFormat;
  sourcetype: string;
  index?: string;
  gzip: boolean;
  timeoutMs: number;
}

export class HecSink implements Sink {
  readonly name = "hec" as const;

  constructor(private readonly options: HecSinkOptions) {}

  async send(events: readonly ExportEvent[]): Promise<Map<number, string>> {
    const refused = new Map<number, string>();
    await this.sendSubset(events.map((e, i) => ({ e, i, line: hecEvent(e, this.options) })), refused);
    return refused;
  }

  private async sendSubset(items: ReadonlyArray<{ e: ExportEvent; i: number; line: string }>, refused: Map<number, string>): Promise<void> {
    let rest = items;
    while (rest.length > 0) {
      const answer = await this.post(rest.map((x) => x.line).join("\n"));
      if (answer.ok) return;
      // 400: one event is malformed (HEC refuses the whole request)
      const invalid = answer.invalidEventNumber;
      if (invalid !== undefined && invalid >= 0 && invalid < rest.length) {
        refused.set((rest[invalid] as { i: number }).i, answer.text);
        rest = rest.filter((_, k) => k !== invalid);
        continue;
      }
      if (rest.length === 1) {
        refused.set((rest[0] as { i: number }).i, answer.text);
        return;
      }
      const half = Math.ceil(rest.length / 2);
      await this.sendSubset(rest.slice(0, half), refused);
      await this.sendSubset(rest.slice(half), refused);
      return;
    }
  }

  private async post(body: string): Promise<{ ok: true } | { ok: false; text: string; invalidEventNumber: number | undefined }> {
    const headers: Record<string, string> = { Authorization: `Splunk ${this.options.token}`, "Content-Type": "application/json" };
    let payload: string | Buffer = body;
    if (this.options.gzip) {
      payload = await gzipAsync(body);
      headers["Content-Encoding"] = "gzip";
    }
    let response: Response;
    let text: string;
    try {
      response = await fetch(this.options.url, { method: "POST", headers, body: payload, signal: AbortSignal.timeout(this.options.timeoutMs) });
      text = await response.text();
    } catch (error) {
      throw new SinkDownError(`HEC unreachable: ${(error as Error).message}`, { cause: error });
    }
    if (response.ok) return { ok: true };
    if (response.status === 400) {
      let invalidEventNumber: number | undefined;
      try {
        const parsed = JSON.parse(text) as { "invalid-event-number"?: unknown };
        if (typeof parsed["invalid-event-number"] === "number") invalidEventNumber = parsed["invalid-event-number"];
      } catch {
        // not JSON: found by halving
      }
      return { ok: false, text: `HEC 400: ${text.slice(0, 500)}`, invalidEventNumber };
    }
    // the token never appears in an error: only the status and HEC's answer
    throw new SinkDownError(`HEC answered ${response.status}: ${text.slice(0, 200)}`);
  }

  async close(): Promise<void> {}
}
