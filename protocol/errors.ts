/**
 * One registry of error codes, shared by gateway and agent, with an exhaustive map to
 * HTTP status and OpenAI error `type`.
 */
export const ERROR_CODES = {
  invalid_request: { status: 400, type: "invalid_request_error" },
  invalid_json: { status: 400, type: "invalid_request_error" },
  invalid_api_key: { status: 401, type: "authentication_error" },
  insufficient_quota: { status: 402, type: "insufficient_quota" },
  permission_denied: { status: 403, type: "permission_error" },
  model_not_found: { status: 404, type: "invalid_request_error" },
  not_found: { status: 404, type: "invalid_request_error" },
  method_not_allowed: { status: 405, type: "invalid_request_error" },
  conflict: { status: 409, type: "invalid_request_error" },
  request_timeout: { status: 408, type: "timeout_error" },
  payload_too_large: { status: 413, type: "invalid_request_error" },
  unsupported_media_type: { status: 415, type: "invalid_request_error" },
  rate_limit_exceeded: { status: 429, type: "rate_limit_error" },
  capacity_exceeded: { status: 429, type: "rate_limit_error" },
  internal_error: { status: 500, type: "server_error" },
  bad_upstream_response: { status: 502, type: "server_error" },
  engine_error: { status: 502, type: "server_error" },
  miner_disconnected: { status: 502, type: "server_error" },
  no_capacity: { status: 503, type: "service_unavailable" },
  not_configured: { status: 503, type: "service_unavailable" },
  /** No first token (or no progress) in time: 408, the timeout status OpenRouter understands. */
  upstream_timeout: { status: 408, type: "timeout_error" },
} as const satisfies Record<string, { status: number; type: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;
export const ERROR_CODE_NAMES = Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]];

export function statusOf(code: ErrorCode): number {
  return ERROR_CODES[code].status;
}

/** The OpenAI error object: `{"error":{"message","type","param","code"}}`. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export function errorBody(code: ErrorCode, message: string, param: string | null = null): OpenAIErrorBody {
  return { error: { message, type: ERROR_CODES[code].type, param, code } };
}
