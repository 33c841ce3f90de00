import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { errorBody, statusOf, type ErrorCode } from "../protocol/index.ts";
import type { AppEnv } from "./env.ts";
import { log } from "./log.ts";

/** The one typed error the gateway throws; `app.onError` turns it into the OpenAI error object. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  get status(): number {
    return statusOf(this.code);
  }
}

export function errorResponse(err: ApiError, requestId?: string): Response {
  const headers = new Headers({ "content-type": "application/json", ...err.headers });
  if (requestId) headers.set("x-request-id", requestId);
  return new Response(JSON.stringify(errorBody(err.code, err.message, err.param)), {
    status: err.status,
    headers,
  });
}

function fromHttpException(err: HTTPException): ApiError {
  const byStatus: Partial<Record<number, ErrorCode>> = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
  };
  return new ApiError(byStatus[err.status] ?? "internal_error", err.message || "Request failed");
}

/** `app.onError`: typed errors keep their code; anything else is a generic 500 without internals. */
export function handleError(err: Error, c: Context<AppEnv>): Response {
  let apiErr: ApiError;
  if (err instanceof ApiError) apiErr = err;
  else if (err instanceof HTTPException) apiErr = fromHttpException(err);
  else {
    log.error("unhandled", { requestId: c.get("requestId"), error: err.message, stack: err.stack });
    apiErr = new ApiError("internal_error", "The server had an error while processing your request.");
  }
  return errorResponse(apiErr, c.get("requestId"));
}
