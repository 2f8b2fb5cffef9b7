import { describe, expect, it } from "vitest";

import { DeadLetterWriter, deadLetterFields } from "./dead-letter.js";
import type { RedisClient } from "./redis.js";
import { StreamSigner } from "./signing.js";

const letter = {
  reason: "schema_invalid",
  srcStream: "caracal.sessions.revoke",
  srcId: "1-0",
  group: "sts-revocation",
  consumer: "host-1",
  deliveries: 2,
  error: "zone_id: required",
  fields: { zone_id: "", reason: "x\ny", _sig: "abc" },
  receivedAt: new Date("2026-11-23T09:00:00.123Z"),
} as const;

describe("dead-letter format", () => {
  it("has exactly the WIRE §4 fields plus src.<field> for every original field", () => {
    expect(deadLetterFields(letter)).toEqual({
      reason: "schema_invalid",
      src_stream: "caracal.sessions.revoke",
      src_id: "1-0",
      group: "sts-revocation",
      consumer: "host-1",
      deliveries: "2",
      error: "zone_id: required",
      received_at: "2026-11-23T09:00:00.123Z",
      "src.zone_id": "",
      "src.reason": "x\ny",
      "src._sig": "abc",
    });
  });

  it("caps a huge error text", () => {
    const f = deadLetterFields({ ...letter, error: "e".repeat(10_000) });
    expect(f.error!.length).toBeLessThanOrEqual(2_001);
  });

  it("signs over the logical dead-letter stream name when a key is set, not otherwise", () => {
    const signer = new StreamSigner(Buffer.alloc(32, 7));
    const redis = {} as RedisClient;
    const signed = new DeadLetterWriter({ redis, signing: { mode: "stable", signer }, keyPrefix: "t:" }).prepare("caracal.sessions.revoke.dead", letter);
    expect(signer.verify("caracal.sessions.revoke.dead", signed)).toBe("valid");
    const unsigned = new DeadLetterWriter({ redis, signing: { mode: "dev", signer: undefined } }).prepare("caracal.sessions.revoke.dead", letter);
    expect(unsigned._sig).toBeUndefined();
  });

  it("keeps the entry id in src_id and the original's own id and src_id fields under src. (WIRE §4)", () => {
    const f = deadLetterFields({ ...letter, srcId: "1700000000000-7", fields: { id: "frame-id", src_id: "chosen-by-producer", stream: "s", data: "{}" } });
    expect(f.src_id).toBe("1700000000000-7");
    expect(f.src_stream).toBe("caracal.sessions.revoke");
    expect(f["src.id"]).toBe("frame-id");
    expect(f["src.src_id"]).toBe("chosen-by-producer");
    expect(f["src.stream"]).toBe("s");
  });
});
