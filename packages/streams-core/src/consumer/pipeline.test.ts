import { pino } from "pino";
import { describe, expect, it } from "vitest";

import { RejectedMessageError, TransientError } from "../errors.js";
import type { RedisClient } from "../redis.js";
import { Topics } from "../registry.js";
import { StreamSigner } from "../signing.js";
import type { Delivery, Outcomes, PipelineContext, Processor } from "./pipeline.js";
import { compose, handlerProcessor, outcomeOfError } from "./pipeline.js";
import { countOutcomes, limitDeliveries, parseTopicSchema, verifySignature } from "./steps/index.js";

const topic = Topics.sessionsRevoke;
const signer = StreamSigner.fromHex("c3".repeat(32));
const stable = { mode: "stable" as const, signer };

function context(metrics: PipelineContext["metrics"] = {}): PipelineContext {
  const logger = pino({ level: "silent" });
  return {
    handler: { signal: new AbortController().signal, logger, group: "g", consumer: "c" },
    topic,
    group: "g",
    consumer: "c",
    delivery: "group",
    redis: {} as RedisClient,
    keyPrefix: "",
    deadLetters: {} as PipelineContext["deadLetters"],
    deadLetterOnceTtlMs: 1_000,
    metrics,
    logger,
    reportError: () => undefined,
  };
}

function delivery(id: string, fields: Record<string, string>, deliveries = 1): Delivery {
  return { id, stream: topic.stream, fields, body: fields, deliveries };
}

const revocation = (n: number) => ({ zone_id: "z", reason: "logout", session_id: `s-${n}` });

describe("pipeline", () => {
  it("classifies handler errors by type: rejection, permanent, transient", () => {
    expect(outcomeOfError(new RejectedMessageError("schema_invalid", "bad"))).toMatchObject({ kind: "reject", reason: "schema_invalid" });
    expect(outcomeOfError(new TransientError("later"))).toMatchObject({ kind: "retry" });
    expect(outcomeOfError(new Error("anything"))).toMatchObject({ kind: "retry" });
  });

  it("composes outermost first and passes only what a step lets through", async () => {
    const seen: string[][] = [];
    const terminal: Processor = async (batch) => {
      seen.push(batch.map((d) => d.id));
      return new Map();
    };
    const p = compose([verifySignature(stable, { missing: "accept" }), parseTopicSchema()], terminal);
    const outcomes = await p(
      [
        delivery("1", signer.signFields(topic.stream, revocation(1))),
        delivery("2", revocation(2)),
        delivery("3", { ...revocation(3), _sig: "0".repeat(64) }),
        delivery("4", signer.signFields(topic.stream, { zone_id: "z", reason: "no anchor" })),
      ],
      context(),
    );
    expect(seen).toEqual([["1", "2"]]);
    expect([...outcomes].map(([id, o]) => [id, o.kind === "reject" ? o.reason : o.kind]).sort()).toEqual([
      ["3", "signature_invalid"],
      ["4", "schema_invalid"],
    ]);
  });

  it("strict signature step rejects a missing _sig; without the step it passes", async () => {
    const terminal: Processor = async () => new Map();
    const strict = await compose([verifySignature(stable)], terminal)([delivery("1", revocation(1))], context());
    expect(strict.get("1")).toMatchObject({ kind: "reject", reason: "signature_missing" });
    const none = await compose([], terminal)([delivery("1", revocation(1))], context());
    expect(none.size).toBe(0);
  });

  it("limitDeliveries turns a retry at the limit into max_deliveries_exceeded and skips entries past it", async () => {
    const calls: string[] = [];
    const failing: Processor = async (batch) => {
      const out: Outcomes = new Map();
      for (const d of batch) {
        calls.push(d.id);
        out.set(d.id, { kind: "retry", error: new TransientError("no") });
      }
      return out;
    };
    const p = compose([limitDeliveries(3)], failing);
    const outcomes = await p([delivery("a", revocation(1), 2), delivery("b", revocation(2), 3), delivery("c", revocation(3), 4)], context());
    expect(calls).toEqual(["a", "b"]);
    expect(outcomes.get("a")?.kind).toBe("retry");
    expect(outcomes.get("b")).toMatchObject({ kind: "reject", reason: "max_deliveries_exceeded" });
    expect(outcomes.get("c")).toMatchObject({ kind: "reject", reason: "max_deliveries_exceeded" });
  });

  it("countOutcomes counts successes only; the handler processor times each call", async () => {
    const acked: number[] = [];
    let durations = 0;
    const handler = handlerProcessor<unknown>(
      {
        handleMessage: async (m) => {
          if (m.id === "2") throw new TransientError("later");
        },
      },
      2,
    );
    const p = compose([countOutcomes()], handler);
    const outcomes = await p([delivery("1", revocation(1)), delivery("2", revocation(2))], context({ acked: (n) => acked.push(n), handlerDuration: () => durations++ }));
    expect(acked).toEqual([1]);
    expect(durations).toBe(2);
    expect(outcomes.get("2")?.kind).toBe("retry");
  });
});
