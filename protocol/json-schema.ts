/**
 * The JSON Schema subset that grammar-constrained decoding can enforce exactly (node-llama-cpp's
 * GBNF JSON schemas), shared by the gateway (which refuses other schemas with a 400 naming the
 * keyword) and the llama.cpp engine (which compiles the result into a grammar).
 *
 * Annotations (title, description, default, examples, $schema, $comment) are dropped, `anyOf`
 * becomes `oneOf` (for generation they are the same: the output matches one branch), and
 * `strict` needs nothing more: a grammar never lets the output leave the schema.
 */

export type SchemaResult = { ok: true; schema: Record<string, unknown> } | { ok: false; path: string; message: string };

const ANNOTATIONS = new Set(["title", "description", "default", "examples", "$schema", "$comment", "$id", "deprecated", "readOnly", "writeOnly"]);
const TYPES = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const FORMATS = new Set(["date-time", "date", "time"]);
const COUNTS = ["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"];
const MAX_DEPTH = 32;

class SchemaError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isScalar = (v: unknown): boolean => v === null || ["string", "number", "boolean"].includes(typeof v);

function convert(node: unknown, path: string, defs: ReadonlySet<string>, depth: number): Record<string, unknown> {
  if (depth > MAX_DEPTH) throw new SchemaError(path, `the schema is nested deeper than ${MAX_DEPTH} levels`);
  if (node === true || (isObject(node) && Object.keys(node).every((k) => ANNOTATIONS.has(k)))) {
    // `{}` / `true`: any JSON value.
    return { oneOf: [...TYPES].filter((t) => t !== "integer").map((type) => ({ type })) };
  }
  if (!isObject(node)) throw new SchemaError(path, "a schema must be an object");
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    const at = `${path}.${key}`;
    if (ANNOTATIONS.has(key)) continue;
    switch (key) {
      case "type": {
        const types = Array.isArray(value) ? value : [value];
        if (types.length === 0 || !types.every((t) => typeof t === "string" && TYPES.has(t))) throw new SchemaError(at, "unknown type");
        out.type = value;
        break;
      }
      case "properties": {
        if (!isObject(value)) throw new SchemaError(at, "properties must be an object");
        out.properties = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, convert(v, `${at}.${k}`, defs, depth + 1)]));
        break;
      }
      case "required":
        if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw new SchemaError(at, "required must be a list of names");
        out.required = value;
        break;
      case "additionalProperties":
        out.additionalProperties = typeof value === "boolean" ? value : convert(value, at, defs, depth + 1);
        break;
      case "items":
        out.items = convert(value, at, defs, depth + 1);
        break;
      case "prefixItems":
        if (!Array.isArray(value)) throw new SchemaError(at, "prefixItems must be a list");
        out.prefixItems = value.map((v, i) => convert(v, `${at}[${i}]`, defs, depth + 1));
        break;
      case "anyOf":
      case "oneOf":
        if (!Array.isArray(value) || value.length === 0) throw new SchemaError(at, `${key} must be a non-empty list`);
        out.oneOf = value.map((v, i) => convert(v, `${at}[${i}]`, defs, depth + 1));
        break;
      case "enum":
        if (!Array.isArray(value) || value.length === 0 || !value.every(isScalar)) throw new SchemaError(at, "enum must list strings, numbers, booleans or null");
        out.enum = value;
        break;
      case "const":
        if (!isScalar(value)) throw new SchemaError(at, "const must be a string, number, boolean or null");
        out.const = value;
        break;
      case "format":
        if (typeof value !== "string" || !FORMATS.has(value)) throw new SchemaError(at, `format '${String(value)}' cannot be enforced (date-time, date and time can)`);
        out.format = value;
        break;
      case "$ref":
        if (typeof value !== "string" || !value.startsWith("#/$defs/") || !defs.has(value.slice(8))) throw new SchemaError(at, "only references to #/$defs/<name> are supported");
        out.$ref = value;
        break;
      case "$defs":
        if (!isObject(value)) throw new SchemaError(at, "$defs must be an object");
        out.$defs = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, convert(v, `${at}.${k}`, defs, depth + 1)]));
        break;
      default:
        if (COUNTS.includes(key)) {
          if (!Number.isInteger(value) || (value as number) < 0) throw new SchemaError(at, `${key} must be a non-negative integer`);
          out[key] = value;
          break;
        }
        throw new SchemaError(at, `the keyword '${key}' cannot be enforced by this model`);
    }
  }
  if (out.type === undefined && out.oneOf === undefined && out.enum === undefined && out.const === undefined && out.$ref === undefined) {
    if (out.properties !== undefined) out.type = "object";
    else if (out.items !== undefined || out.prefixItems !== undefined) out.type = "array";
    else throw new SchemaError(path, "the schema needs a type, enum, const, anyOf or $ref");
  }
  return out;
}

/** Checks a client's JSON Schema against the enforceable subset and returns it in that subset. */
export function toGrammarSchema(schema: unknown, path = "schema"): SchemaResult {
  const defs = new Set(isObject(schema) && isObject(schema.$defs) ? Object.keys(schema.$defs) : []);
  try {
    return { ok: true, schema: convert(schema, path, defs, 0) };
  } catch (err) {
    if (err instanceof SchemaError) return { ok: false, path: err.path, message: err.message };
    throw err;
  }
}
