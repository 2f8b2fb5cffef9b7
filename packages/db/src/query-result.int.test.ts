import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { queryResult } from "./index.js";

const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

describe("queryResult", () => {
  const client = new pg.Client({ connectionString: adminUrl });
  beforeAll(() => client.connect());
  afterAll(() => client.end());

  it("resolves to the result of a named query with parameters and custom type parsers, as client.query does", async () => {
    const config = {
      name: "query_result_test",
      text: "SELECT x, jsonb_build_object('n', x) AS doc FROM generate_series(1, $1::int) AS x",
      values: [3],
      types: { getTypeParser: ((oid: number) => (oid === 3802 ? (v: string) => `raw:${v}` : pg.types.getTypeParser(oid))) as typeof pg.types.getTypeParser },
    };
    const ours = await queryResult<{ x: number; doc: string }>(client, config);
    const theirs = await client.query<{ x: number; doc: string }>(config);
    expect(ours.rows).toEqual([
      { x: 1, doc: 'raw:{"n": 1}' },
      { x: 2, doc: 'raw:{"n": 2}' },
      { x: 3, doc: 'raw:{"n": 3}' },
    ]);
    expect(ours.rows).toEqual(theirs.rows);
    expect(ours.rowCount).toBe(3);
  });

  it("rejects with PostgreSQL's error, and the connection stays usable", async () => {
    await expect(queryResult(client, { text: "SELECT 1/0" })).rejects.toMatchObject({ code: "22012" });
    expect((await queryResult<{ one: number }>(client, { text: "SELECT 1 AS one" })).rows).toEqual([{ one: 1 }]);
  });
});
