// The public HTTP API, as the page uses it: JSON calls and SSE streams, errors in OpenAI's shape.
// Keys live in sessionStorage: typed once, kept for this tab only, sent on every call.

const API_KEY = "mlx-interp.api-key";
const ADMIN_KEY = "mlx-interp.admin-key";
const STREAM_FAILED = -1; // an error reported inside a stream, after the 200 went out

export class ApiError extends Error {
  constructor(status, message, { param = null, code = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  // One line for the user: the server's own message, with what the status means.
  describe() {
    if (this.status === 429) {
      const wait = this.retryAfter ? ` Retry in ${this.retryAfter} s.` : "";
      return `The server is busy (429): ${this.message}.${wait}`;
    }
    if (this.status === 401) return `Needs the API key (401): ${this.message}`;
    if (this.status === 403) return `Needs the admin key (403): ${this.message}`;
    if (this.status === 0) return this.message;
    if (this.status === STREAM_FAILED) return `The answer stopped with an error: ${this.message}`;
    return `Error ${this.status}: ${this.message}`;
  }
}

export const keys = {
  api: () => sessionStorage.getItem(API_KEY) || "",
  admin: () => sessionStorage.getItem(ADMIN_KEY) || "",
  setApi: (k) => (k ? sessionStorage.setItem(API_KEY, k) : sessionStorage.removeItem(API_KEY)),
  setAdmin: (k) => (k ? sessionStorage.setItem(ADMIN_KEY, k) : sessionStorage.removeItem(ADMIN_KEY)),
};

function headers(admin) {
  const h = { "Content-Type": "application/json" };
  // The admin key also passes the API-key check, so an admin call sends only it.
  const key = admin ? keys.admin() || keys.api() : keys.api();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorFrom(response) {
  let message = response.statusText || "request failed";
  let param = null;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) ({ message, param, code } = body.error);
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, message, { param, code, retryAfter: response.headers.get("Retry-After") });
}

async function send(method, path, body, { admin = false, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(admin),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Could not reach the server (${err.message}).`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJSON(path) {
  return (await send("GET", path)).json();
}

export async function postJSON(path, body, opts) {
  return (await send("POST", path, body, opts)).json();
}

export async function del(path, opts) {
  return (await send("DELETE", path, undefined, opts)).json();
}

// POST a streaming request; yields each SSE data payload parsed (an {"error": ...} payload throws).
export async function* stream(path, body, signal) {
  const response = await send("POST", path, body, { signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) {
          throw new ApiError(STREAM_FAILED, event.error.message, { param: event.error.param, code: event.error.code });
        }
        yield event;
      }
    }
  }
}
