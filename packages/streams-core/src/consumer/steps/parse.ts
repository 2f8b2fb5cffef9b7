/**
 * Parsing: replaces each delivery's `body` (the fields until now) with the parsed value. A parser throws
 * `RejectedMessageError("schema_invalid" | "parse_error")`; any other throw is a `parse_error` rejection.
 */
import type { Fields } from "../../codec.js";
import { RejectedMessageError, errorMessage } from "../../errors.js";
import type { Topic } from "../../registry.js";
import { formatIssues, topicSchemas } from "../../schemas.js";
import type { Delivery, Outcomes, Step } from "../pipeline.js";
import { passOn } from "../pipeline.js";

/** Parses with `parse`; an entry it throws for is rejected without reaching the next step. */
export function parseFields<T>(parse: (fields: Fields) => T): Step {
  return (next) => async (batch, context) => {
    const passed: Delivery[] = [];
    const settled: Outcomes = new Map();
    for (const d of batch) {
      try {
        passed.push({ ...d, body: parse(d.fields as Fields) });
      } catch (error) {
        settled.set(d.id, { kind: "reject", reason: error instanceof RejectedMessageError ? error.reason : "parse_error", error: errorMessage(error) });
      }
    }
    return passOn(next, passed, settled, context);
  };
}

/** The topic's zod schema as a parser; an invalid entry is a `schema_invalid` rejection. */
export function schemaParser<T>(topic: Topic): (fields: Fields) => T {
  const schema = topicSchemas[topic.name];
  return (fields) => {
    const result = schema.safeParse(fields);
    if (!result.success) throw new RejectedMessageError("schema_invalid", formatIssues(result.error));
    return result.data as T;
  };
}

/** Parses with the zod schema of the topic the consumer reads. */
export function parseTopicSchema(): Step {
  const parsers = new Map<string, (fields: Fields) => unknown>();
  return (next) => {
    return async (batch, context) => {
      let parse = parsers.get(context.topic.name);
      if (parse === undefined) {
        parse = schemaParser(context.topic);
        parsers.set(context.topic.name, parse);
      }
      return parseFields(parse)(next)(batch, context);
    };
  };
}
