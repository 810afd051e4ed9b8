// The HTTP API of `orchestrate serve` (docs/serve-api.md): the token, JSON requests and the SSE event streams.

const TOKEN_KEY = "orchestrate-token";

/** Takes `#token=...` out of the address (kept in sessionStorage) and returns the token, or null. */
export function takeToken() {
  const match = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** An API answer that was not 2xx: `status`, and the JSON body in `body` (`detail` or `issues`). */
export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  if (body && Array.isArray(body.issues)) return `${body.issues.length} problem(s) in the project`;
  return `HTTP ${status}`;
}

let onUnauthorized = () => {};

/** Called with every 401, so the page can ask for a token. */
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}`, ...extra } : extra;
}

/** `GET` (or `method` with a JSON `body`) an API path; resolves to the parsed JSON, rejects with ApiError. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (response.status === 401) onUnauthorized();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A random id for a review decision (crypto.randomUUID needs a secure context; this does not). */
export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Reads the SSE stream at `path` with fetch (EventSource cannot send the Authorization header) and calls
 * `onEvent({id, kind, data})` for each event, `onState("live" | "reconnecting" | "ended")` as the connection
 * changes. After a drop it reconnects with `Last-Event-ID` set to the last id seen (`lastId` to begin with);
 * when the server ends the stream, it reconnects only if `reconnect()` says so. Returns `{close()}`.
 */
export function openStream(path, { onEvent, onState = () => {}, reconnect = () => true, lastId = null }) {
  const controller = new AbortController();
  let closed = false;
  let delay = 500;

  async function connect() {
    while (!closed) {
      let finished = false;
      try {
        const extra = lastId === null ? {} : { "Last-Event-ID": String(lastId) };
        const response = await fetch(path, { headers: headers(extra), signal: controller.signal });
        if (response.status === 401) onUnauthorized();
        if (response.ok && response.body) {
          onState("live");
          delay = 500;
          await read(response.body, (event) => {
            if (event.id !== null) lastId = event.id;
            onEvent(event);
          });
        }
        finished = response.status === 404 || (response.ok && !reconnect()); // 404: the run is gone
      } catch (error) {
        if (closed || error.name === "AbortError") return;
      }
      if (finished) {
        onState("ended");
        return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  connect();
  return {
    close() {
      closed = true;
      controller.abort();
    },
  };
}

/** Parses an SSE body, calling `handle(event)` for each event, until the body ends. */
async function read(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const event = parseBlock(block);
      if (event) handle(event);
    }
  }
}

function parseBlock(block) {
  let id = null;
  let kind = "message";
  const data = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  let parsed;
  try {
    parsed = JSON.parse(data.join("\n"));
  } catch {
    return null;
  }
  return { id, kind, data: parsed };
}
