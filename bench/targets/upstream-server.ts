/**
 * The synthetic OpenAI-compatible upstream every synthetic row calls (test/support's upstream
 * double), in its own process so it never shares an event loop with the load generator. With no
 * argument it has no delays: tokens are written as fast as the socket takes them. With
 * `--delay-per-token-ms=N` it paces a stream's tokens N ms apart, as an engine decodes (the
 * paced phase). Prints `UPSTREAM_URL=<base URL>`.
 */
import { parseArgs } from "node:util";
import { startUpstreamDouble } from "../../test/support/upstream-double.ts";

const { values } = parseArgs({ options: { "delay-per-token-ms": { type: "string" } } });
const delayPerTokenMs = Number(values["delay-per-token-ms"] ?? 0);
if (!Number.isFinite(delayPerTokenMs) || delayPerTokenMs < 0) throw new Error(`bad --delay-per-token-ms: ${values["delay-per-token-ms"]}`);

const upstream = await startUpstreamDouble({ model: "synthetic", ...(delayPerTokenMs > 0 ? { delayPerTokenMs } : {}) });
// The double remembers every request for test assertions; a benchmark sends too many for that.
setInterval(() => upstream.reset(), 1000).unref();
process.stdout.write(`UPSTREAM_URL=${upstream.url}\n`);

const stop = (): void => void upstream.close().finally(() => process.exit(0));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
// The bench holds our stdin open: when it goes away, so do we.
process.stdin.on("end", stop).resume();
