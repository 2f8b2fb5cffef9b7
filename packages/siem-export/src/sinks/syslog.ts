/**
 * Syslog over TCP (TLS when configured): RFC 5424 messages carrying CEF, octet-counted (RFC 6587). One
 * connection, opened on first use and again after any error. A batch counts as accepted once the socket
 * took every byte (TCP syslog has no acknowledgement: bytes in flight when the server dies are lost with
 * it, the limit of the protocol; the HEC and file sinks confirm each batch).
 */
import { readFileSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import type { Socket } from "node:net";
import { connect as connectTls } from "node:tls";

import { syslogFrame } from "../formats.js";
import type { ExportEvent } from "../formats.js";
import { SinkDownError } from "./sink.js";
import type { Sink } from "./sink.js";

export interface SyslogSinkOptions {
  host: string;
  port: number;
  tls: boolean;
  caFile?: string;
  /** PEM CA certificates (tests), instead of caFile. */
  ca?: string;
  timeoutMs: number;
}

export class SyslogSink implements Sink {
  readonly name = "syslog" as const;
  private socket: Socket | undefined;
  private readonly ca: string | undefined;

  constructor(private readonly options: SyslogSinkOptions) {
    this.ca = options.ca ?? (options.caFile !== undefined ? readFileSync(options.caFile, "utf8") : undefined);
  }

  async send(events: readonly ExportEvent[]): Promise<Map<number, string>> {
    const data = events.map(syslogFrame).join("");
    try {
      const socket = await this.connected();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`write not done in ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
        socket.write(data, "utf8", (error) => {
          clearTimeout(timer);
          if (error) reject(error);
          else resolve();
        });
      });
    } catch (error) {
      this.drop();
      throw new SinkDownError(`syslog ${this.options.host}:${this.options.port}: ${(error as Error).message}`, { cause: error });
    }
    return new Map();
  }

  private connected(): Promise<Socket> {
    const existing = this.socket;
    if (existing !== undefined && !existing.destroyed && existing.writable) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const { host, port } = this.options;
      const socket = this.options.tls
        ? connectTls({ host, port, servername: host, ...(this.ca !== undefined ? { ca: this.ca } : {}) })
        : connectTcp({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection in ${this.options.timeoutMs} ms`));
      }, this.options.timeoutMs);
      socket.once(this.options.tls ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        socket.setKeepAlive(true, 30_000);
        socket.removeAllListeners("error");
        // a later error (the server went away) destroys the socket: the next send reconnects
        socket.on("error", () => socket.destroy());
        this.socket = socket;
        resolve(socket);
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      });
    });
  }

  private drop(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (socket === undefined || socket.destroyed) return;
    await new Promise<void>((resolve) => socket.end(() => resolve()));
  }
}
