/**
 * A Durable Object's `meta` table: small named values (schema version, counters, settings) in
 * its SQLite storage, read and written synchronously.
 */
export class MetaTable {
  constructor(private readonly sql: SqlStorage) {
    sql.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)");
  }

  get(key: string): SqlStorageValue | null {
    return this.sql.exec<{ value: SqlStorageValue }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value ?? null;
  }

  /** The value when it is a number, else null. */
  number(key: string): number | null {
    const v = this.get(key);
    return typeof v === "number" ? v : null;
  }

  set(key: string, value: SqlStorageValue): void {
    this.sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value);
  }
}
