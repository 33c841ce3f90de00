import { describe, expect, it } from "vitest";
import { toGrammarSchema } from "./json-schema.ts";

describe("toGrammarSchema", () => {
  it("keeps what a grammar enforces, drops annotations, turns anyOf into oneOf", () => {
    const r = toGrammarSchema({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      title: "Pet",
      type: "object",
      description: "a pet",
      properties: {
        name: { type: "string", maxLength: 10, description: "its name", examples: ["Rex"] },
        owner: { anyOf: [{ type: "null" }, { $ref: "#/$defs/person" }] },
        tags: { type: "array", items: { enum: ["a", "b"] }, minItems: 1, maxItems: 2 },
        born: { type: "string", format: "date" },
      },
      required: ["name"],
      additionalProperties: false,
      $defs: { person: { type: "object", properties: { city: { const: "Paris" } } } },
    });
    expect(r).toEqual({
      ok: true,
      schema: {
        type: "object",
        properties: {
          name: { type: "string", maxLength: 10 },
          owner: { oneOf: [{ type: "null" }, { $ref: "#/$defs/person" }] },
          tags: { type: "array", items: { enum: ["a", "b"] }, minItems: 1, maxItems: 2 },
          born: { type: "string", format: "date" },
        },
        required: ["name"],
        additionalProperties: false,
        $defs: { person: { type: "object", properties: { city: { const: "Paris" } } } },
      },
    });
  });

  it("infers object and array types from their keywords; {} is any JSON value", () => {
    expect(toGrammarSchema({ properties: { a: { type: "integer" } } })).toMatchObject({ ok: true, schema: { type: "object" } });
    expect(toGrammarSchema({ items: { type: "boolean" } })).toMatchObject({ ok: true, schema: { type: "array" } });
    const any = toGrammarSchema({ type: "object", properties: { v: {} } });
    expect(any.ok && (any.schema.properties as Record<string, { oneOf: unknown[] }>).v?.oneOf).toHaveLength(6);
  });

  it("refuses what it cannot enforce, naming the path and keyword", () => {
    const cases: [unknown, string, RegExp][] = [
      [{ type: "string", pattern: "^a" }, "schema.pattern", /pattern/],
      [{ type: "object", properties: { n: { type: "integer", minimum: 1 } } }, "schema.properties.n.minimum", /minimum/],
      [{ type: "string", format: "email" }, "schema.format", /email/],
      [{ allOf: [{ type: "string" }] }, "schema.allOf", /allOf/],
      [{ $ref: "#/definitions/x" }, "schema.$ref", /\$defs/],
      [{ type: "strange" }, "schema.type", /unknown type/],
      [{ minLength: 2 }, "schema", /needs a type/],
      ["string", "schema", /object/],
    ];
    for (const [schema, path, message] of cases) {
      const r = toGrammarSchema(schema);
      expect(r.ok, JSON.stringify(schema)).toBe(false);
      if (!r.ok) {
        expect(r.path).toBe(path);
        expect(r.message).toMatch(message);
      }
    }
  });
});
