import { z } from "zod";
import { ApiError } from "../errors.ts";

/**
 * The 400 for a body its schema refused, worded as OpenAI words its own, from the first issue:
 * a field left out is "Missing required parameter"; a field of the wrong type is "Invalid type
 * for" (what was expected, what came); a value outside a fixed set is "Invalid value" (with the
 * values accepted); anything else is "Invalid parameter" with zod's reason. `param` names the
 * field. For a union, the branch that got furthest into the value speaks for it.
 */
export function bodyRefusal(error: z.ZodError, body: unknown, schema: z.ZodType): ApiError {
  const issue = error.issues[0];
  if (!issue) return new ApiError("invalid_request", "Invalid request body.");
  if (issue.code === "unrecognized_keys") {
    const param = paramOf([...issue.path, issue.keys[0]!]);
    return new ApiError("invalid_request", `Unrecognized request argument supplied: ${param}.`, param);
  }
  const { path, message } = describe(issue, body, schema);
  return new ApiError("invalid_request", message, paramOf(path));
}

/** `messages[0].content` from a zod issue path. */
export function paramOf(path: readonly PropertyKey[]): string | null {
  if (path.length === 0) return null;
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

type Issue = z.core.$ZodIssue;

function describe(issue: Issue, body: unknown, schema: z.ZodType): { path: PropertyKey[]; message: string } {
  const path = issue.path;
  const named = path.length > 0 ? ` '${paramOf(path)}'` : "";
  const value = valueAt(body, path);
  // A union's tag (a message's `role`) left out fails as a union, not as a type.
  if ((issue.code === "invalid_type" || issue.code === "invalid_union") && value === undefined) {
    return { path, message: `Missing required parameter${named}.` };
  }
  // A schema's own reason (a price's format, a refused literal) is kept; zod's defaults are reworded.
  const own = !/^(Invalid input|Invalid option|Too small|Too big)\b/.test(issue.message);
  if (issue.code === "invalid_type") {
    const why = own ? sentence(issue.message) : `expected ${EXPECTED[issue.expected] ?? issue.expected}, but got ${kindOf(value)} instead.`;
    return { path, message: `Invalid type for${named}: ${why}` };
  }
  if (issue.code === "invalid_value") {
    const why = own ? sentence(issue.message) : `${show(value)}. Supported values are: ${listOf(issue.values.map(show))}.`;
    return { path, message: `Invalid value for${named}: ${why}` };
  }
  if (issue.code === "too_small" || issue.code === "too_big") {
    return { path, message: `Invalid value for${named}: ${own ? sentence(issue.message) : `${bound(issue, value)}.`}` };
  }
  if (issue.code === "invalid_key" && issue.issues[0]) {
    return { path, message: `Invalid key for${named}: ${sentence(issue.issues[0].message)}` };
  }
  if (issue.code === "invalid_union") {
    // A union with a reason of its own (`prompt`'s) says it.
    if (own) return { path, message: `Invalid parameter${named}: ${sentence(issue.message)}` };
    if (issue.errors.length === 0) {
      // A discriminated union whose tag matched none of its branches.
      const tags = tagsAt(schema, body, path);
      const supported = tags.length > 0 ? ` Supported values are: ${listOf(tags.map(show))}.` : "";
      return { path, message: `Invalid value for${named}: ${show(value)}.${supported}` };
    }
    // The branch that got into the value (an issue below the union's own path) speaks for it.
    const firsts = issue.errors.map((branch) => branch[0]).filter((i): i is Issue => i !== undefined);
    const deepest = firsts.reduce<Issue | null>((best, i) => (i.path.length > (best?.path.length ?? 0) ? i : best), null);
    if (deepest) return describe({ ...deepest, path: [...path, ...deepest.path] } as Issue, body, schema);
    // Every branch refused the value itself: say what any of them takes.
    const wanted = firsts.flatMap((i) => (i.code === "invalid_type" ? [EXPECTED[i.expected] ?? i.expected] : i.code === "invalid_value" ? i.values.map(show) : []));
    if (wanted.length > 0) {
      const valueAllowed = firsts.some((i) => i.code === "invalid_value" && i.values.some((v) => typeof v === typeof value));
      const what = valueAllowed ? `Invalid value for${named}: expected ${listOf(wanted, "or")}, but got ${show(value)}.` : `Invalid type for${named}: expected ${listOf(wanted, "or")}, but got ${kindOf(value)} instead.`;
      return { path, message: what };
    }
  }
  return { path, message: `Invalid parameter${named}: ${sentence(issue.message)}` };
}

/** The value a zod issue path points at in the raw body (undefined when absent). */
function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let v = body;
  for (const p of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/**
 * The tags a discriminated union accepts, for an issue on its tag (`messages[0].role`): the
 * schema is walked down the path to the union, through the branches the body's values took.
 */
function tagsAt(schema: z.ZodType, body: unknown, path: readonly PropertyKey[]): unknown[] {
  const key = path.at(-1);
  let s: z.ZodType | undefined = schema;
  let v = body;
  for (const p of path.slice(0, -1)) {
    s = s && child(s, v, p);
    v = typeof v === "object" && v !== null ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  }
  s = s && unwrap(s);
  if (!(s instanceof z.ZodDiscriminatedUnion) || typeof key !== "string") return [];
  return s.options.flatMap((o) => {
    const tag = o instanceof z.ZodObject ? unwrap(o.shape[key] as z.ZodType) : undefined;
    return tag instanceof z.ZodLiteral ? [...tag.values] : tag instanceof z.ZodEnum ? tag.options : [];
  });
}

function unwrap(s: z.ZodType): z.ZodType {
  while (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodType;
  return s;
}

/** The schema of `value[p]` under `s`; in a union, that of the branch `value` fits. */
function child(s: z.ZodType, value: unknown, p: PropertyKey): z.ZodType | undefined {
  const u = unwrap(s);
  if (u instanceof z.ZodObject && typeof p === "string") return u.shape[p] as z.ZodType | undefined;
  if (u instanceof z.ZodArray && typeof p === "number") return u.element as z.ZodType;
  if (u instanceof z.ZodUnion) {
    const options = u.options as z.ZodType[];
    // A discriminated union's branch is the one whose tag the value carries; another union's, the first that has the child.
    const fits = u instanceof z.ZodDiscriminatedUnion ? options.filter((o) => tagFits(o, value, u.def.discriminator)) : options;
    for (const o of fits) {
      const c = child(o, value, p);
      if (c) return c;
    }
  }
  return undefined;
}

function tagFits(option: z.ZodType, value: unknown, key: string): boolean {
  const tag = option instanceof z.ZodObject ? unwrap(option.shape[key] as z.ZodType) : undefined;
  const given = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
  return tag !== undefined && tag.safeParse(given).success;
}

/** A bound's refusal: "expected a number at most 2, but got 7". */
function bound(issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig, value: unknown): string {
  const small = issue.code === "too_small";
  const limit = Number(small ? issue.minimum : issue.maximum);
  const edge = small ? (issue.inclusive === false ? "more than" : "at least") : issue.inclusive === false ? "less than" : "at most";
  if (issue.origin === "array" && Array.isArray(value)) return `expected an array of ${edge} ${limit} item${limit === 1 ? "" : "s"}, but got ${value.length}`;
  if (issue.origin === "string" && typeof value === "string") return `expected ${edge} ${limit} character${limit === 1 ? "" : "s"}, but got ${value.length}`;
  return `expected ${issue.origin === "int" ? "an integer" : "a number"} ${edge} ${limit}, but got ${show(value)}`;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "number" && !Number.isInteger(v)) return "a decimal number";
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? `a ${typeof v}` : typeof v;
}

const EXPECTED: Record<string, string> = {
  array: "an array",
  object: "an object",
  int: "an integer",
  number: "a number",
  string: "a string",
  boolean: "a boolean",
  null: "null",
};

/** A value as a message quotes it: strings in single quotes, the rest as JSON (cut short). */
function show(v: unknown): string {
  if (typeof v === "string") return `'${v.length > 64 ? `${v.slice(0, 64)}...` : v}'`;
  const json = JSON.stringify(v) ?? String(v);
  return json.length > 64 ? `${json.slice(0, 64)}...` : json;
}

/** "a, b and c" (or "or"). */
function listOf(items: string[], last: "and" | "or" = "and"): string {
  const unique = [...new Set(items)];
  return unique.length <= 1 ? (unique[0] ?? "") : `${unique.slice(0, -1).join(", ")} ${last} ${unique.at(-1)}`;
}

/** zod's reason as the end of a sentence (some of our own reasons end in a period already). */
function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}
