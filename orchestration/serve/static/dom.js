// Small helpers shared by the views: building elements (never from HTML strings) and formatting values.

export const STATUS_MARK = {
  pending: "○",
  running: "◔",
  waiting: "‖",
  batched: "⧗",
  success: "✓",
  failed: "✕",
  skipped: "–",
  cancelled: "⊘",
};

export const TASK_STATUSES = ["pending", "running", "waiting", "batched", "success", "failed", "skipped", "cancelled"];

/**
 * `h("button", {class: "x", "data-action": "approve", onclick: f}, "Approve")`: an element with attributes,
 * listeners (`on...`) and children (strings become text). `null`, `false` and `undefined` are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** A status shown with its colour, a mark and its word. */
export function pill(status, attributes = {}) {
  return h("span", { class: "pill", "data-status": status, ...attributes }, `${STATUS_MARK[status] || "•"} ${status}`);
}

export function setPill(node, status) {
  node.dataset.status = status;
  node.textContent = `${STATUS_MARK[status] || "•"} ${status}`;
}

export function money(usd) {
  if (usd === null || usd === undefined) return "–";
  if (usd === 0) return "$0";
  return `$${usd.toFixed(usd < 1 ? 4 : 2)}`;
}

/** 0.4s, 12s, 3m05s, 2h04m. */
export function seconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s < 10) return `${Math.round(s * 10) / 10}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function time(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const options = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  return date.toLocaleString(undefined, options);
}

/** How long ago `iso` was ("12s ago"), or how long until it is ("in 5m00s"). */
export function ago(iso) {
  if (!iso) return "–";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s >= 0 ? `${seconds(s)} ago` : `in ${seconds(-s)}`;
}

export function number(n) {
  return n === null || n === undefined ? "–" : n.toLocaleString();
}

/** A definition list from [label, value] pairs (pairs with an undefined value are left out). */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Calls `fn` at most once every `ms`, the last call winning (and always run, `ms` after the first). */
export function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        fn();
      }, ms);
    }
  };
}

/** Text for a JSON value or JSON text, pretty-printed; other text as it is. */
export function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  const trimmed = value.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return JSON.stringify(JSON.parse(trimmed), null, 2);
    } catch {
      return value;
    }
  }
  return value;
}

/** The message of an error for the page: the server's `detail` when it gave one. */
export function reason(error) {
  return error && error.message ? error.message : String(error);
}
