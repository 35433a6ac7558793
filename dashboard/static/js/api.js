// fetch() wrapper: JSON in and out, the session's CSRF token on every change.

let csrfToken = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.message(detail));
    this.status = status;
    this.detail = detail;
  }

  static message(detail) {
    if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("\n");
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }
}

export function setCsrf(token) { csrfToken = token; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401 && !path.endsWith("/login")) onUnauthorized();
    throw new ApiError(response.status, data ? data.detail : response.statusText);
  }
  return data;
}
