/** Real local sinks for the tests and the benchmark: a Splunk HEC server, a syslog TCP/TLS listener. */
import { createServer } from "node:http";
import type { IncomingMessage } from "node:http";
import { createServer as createTcpServer } from "node:net";
import type { Server as TcpServer, Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { gunzipSync } from "node:zlib";

export interface HecServer {
  url: string;
  token: string;
  /** Events accepted, in order (the `event` of each envelope). */
  readonly events: Array<Record<string, unknown>>;
  /** Requests seen, by status answered. */
  readonly answers: number[];
  /** "up" accepts; "down" answers 503; "busy-then-up" is set by tests through `mode`. */
  mode: "up" | "down";
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  return (req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw).toString("utf8");
}

/**
 * Answers as Splunk HEC does: 200 {"text":"Success","code":0}; 401 on a wrong token; 503 while down; 400
 * {"text":"Invalid data format","code":6,"invalid-event-number":n} for an event whose `event_type` is
 * "malformed" (the whole request is refused then).
 */
export async function startHecServer(token = "test-hec-token"): Promise<HecServer> {
  const state: HecServer = {
    url: "",
    token,
    events: [],
    answers: [],
    mode: "up",
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    void (async () => {
      const text = await body(req);
      const answer = (status: number, json: unknown) => {
        state.answers.push(status);
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(JSON.stringify(json));
      };
      if (req.headers.authorization !== `Splunk ${token}`) return answer(401, { text: "Invalid authorization", code: 3 });
      if (state.mode === "down") return answer(503, { text: "Server is busy", code: 9 });
      const envelopes = text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { event: Record<string, unknown> });
      const bad = envelopes.findIndex((e) => e.event.event_type === "malformed" || (e.event.metadata as { api?: { operation?: string } } | undefined)?.api?.operation === "malformed");
      if (bad >= 0) return answer(400, { text: "Invalid data format", code: 6, "invalid-event-number": bad });
      for (const e of envelopes) state.events.push(e.event);
      answer(200, { text: "Success", code: 0 });
    })();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}

export interface SyslogServer {
  port: number;
  /** Messages received (octet counting undone), in order. */
  readonly messages: string[];
  close(): Promise<void>;
}

/** A TCP (or TLS, with `tls` key and cert) syslog receiver that undoes RFC 6587 octet counting. */
export async function startSyslogServer(tls?: { key: string; cert: string }): Promise<SyslogServer> {
  const messages: string[] = [];
  const sockets = new Set<Socket>();
  const onSocket = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const space = buffer.indexOf(0x20);
        if (space < 0) return;
        const length = Number(buffer.subarray(0, space).toString("ascii"));
        if (buffer.length < space + 1 + length) return;
        messages.push(buffer.subarray(space + 1, space + 1 + length).toString("utf8"));
        buffer = buffer.subarray(space + 1 + length);
      }
    });
  };
  const server: TcpServer = tls ? createTlsServer({ key: tls.key, cert: tls.cert }, onSocket) : createTcpServer(onSocket);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    messages,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
