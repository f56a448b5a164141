// The admin API as the console calls it: same-origin JSON with the session cookie, and the
// session's CSRF token on every request that changes something.

let csrfToken = null;
let onSignedOut = () => {};

/** An admin API answer that is not a success: its status and the server's `error` text. */
export class ApiError extends Error {
  constructor(status, message, body, headers) {
    super(message);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/** What to do when the session ends (a 401 on any call). */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function setCsrf(token) {
  csrfToken = token;
}

/**
 * Calls `path` with `method`; `body` is sent as JSON, or as it is when it is a Blob or File
 * (a certificate upload). Resolves with the parsed JSON (or text), rejects with ApiError.
 */
export async function call(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  let payload;
  if (body instanceof Blob) {
    payload = body;
    if (!headers["Content-Type"]) headers["Content-Type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const resp = await fetch(path, {
    method,
    headers,
    body: payload,
    credentials: "same-origin",
    cache: "no-store",
  });
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const message = (data && data.error) || (typeof data === "string" && data) || resp.statusText;
    const err = new ApiError(resp.status, message, data, resp.headers);
    if (resp.status === 401 && path !== "/v1/session") onSignedOut(err);
    throw err;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const put = (path, body, headers) => call("PUT", path, body, headers);
export const del = (path) => call("DELETE", path);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.append(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
