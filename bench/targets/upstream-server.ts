/**
 * The synthetic OpenAI-compatible upstream every synthetic row calls (test/support's upstream
 * double: no delays, tokens written as fast as the socket takes them), in its own process so it
 * never shares an event loop with the load generator. Prints `UPSTREAM_URL=<base URL>`.
 */
import { startUpstreamDouble } from "../../test/support/upstream-double.ts";

const upstream = await startUpstreamDouble({ model: "synthetic" });
// The double remembers every request for test assertions; a benchmark sends too many for that.
setInterval(() => upstream.reset(), 1000).unref();
process.stdout.write(`UPSTREAM_URL=${upstream.url}\n`);

const stop = (): void => void upstream.close().finally(() => process.exit(0));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
// The bench holds our stdin open: when it goes away, so do we.
process.stdin.on("end", stop).resume();
