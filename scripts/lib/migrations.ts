import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";

/** The statements of every drizzle-kit migration in `dir`, in order. */
export async function migrationStatements(dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const out: string[] = [];
  for (const f of files) {
    const sql = await readFile(join(dir, f), "utf8");
    out.push(...sql.split("--> statement-breakpoint").map((s) => s.trim()).filter(Boolean));
  }
  return out;
}
