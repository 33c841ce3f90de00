export * from "./errors.ts";
export * from "./inference.ts";
export * from "./messages.ts";
export * from "./identity.ts";
