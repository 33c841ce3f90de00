export * from "./errors.ts";
export * from "./inference.ts";
export * from "./messages.ts";
export * from "./gpus.ts";
export * from "./identity.ts";
