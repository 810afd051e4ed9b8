// The timeline: one row per started task with its attempts, review wait and idle time, on a canvas that draws
// only the rows in view (so 5,000 tasks cost what 20 do). Spans where no task ran are shaded as run idle time.

import { seconds } from "./dom.js";

const ROW_H = 20;
const AXIS_H = 24;
const GUTTER = 160;
const MAX_H = 380;
const COLOURS = {
  attempt: "#3f8f5a",
  failedAttempt: "#c2453d",
  running: "#3b6fd1",
  review: "#d49a1c",
  idle: "#d9dde3",
  other: "#9aa1ab",
  runIdle: "rgba(120, 130, 145, 0.10)",
};
const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/**
 * Where a task's time went: [{kind, from, to, label}] in epoch ms, or [] for a task that never started.
 * Attempt durations come from `attempt_log`; where they sit inside the task's span is estimated: a review gate on
 * the answer opens after the attempts (one on the request, before them), a single attempt ends its stretch, and
 * the time several attempts do not cover is shared out between them (backoff).
 */
export function segments(task, now) {
  const start = task.startedMs;
  if (!start) return [];
  const live = !task.completedMs && (task.status === "running" || task.status === "waiting");
  const end = Math.max(start, task.completedMs || (live ? now : start));
  const log = task.attempt_log || [];
  const busy = log.reduce((sum, a) => sum + (a.duration_s || 0) * 1000, 0);
  const out = [];
  const idle = (from, to, label) => to > from && out.push({ kind: "idle", from, to, label });
  let from = start;
  let to = end;
  const review = reviewSpan(task, now);
  if (review) {
    out.push({ kind: "review", from: review[0], to: review[1], label: "review wait" });
    if (review[0] - start >= busy * 0.95) {
      to = review[0]; // the answer waited: the attempts came first
      idle(review[1], end, "idle (the decision being picked up)");
    } else {
      from = review[1]; // the request waited: the attempts followed
      idle(start, review[0], "idle (queued)");
    }
  }
  if (!log.length && !live) {
    const kind = task.status === "success" ? "attempt" : task.status === "failed" ? "failedAttempt" : "other";
    out.push({ kind, from, to, label: task.status });
    return out;
  }
  const gap = live ? 0 : Math.max(0, to - from - busy) / Math.max(1, log.length - 1);
  let at = live || log.length > 1 ? from : Math.max(from, to - busy);
  idle(from, at, "idle (queued or paced)");
  log.forEach((attempt, i) => {
    const next = at + (attempt.duration_s || 0) * 1000;
    const failed = Boolean(attempt.error_type);
    const label = `attempt ${i + 1}${attempt.agent ? " on " + attempt.agent : ""}${failed ? ": " + attempt.error_type : ""}`;
    out.push({ kind: failed ? "failedAttempt" : "attempt", from: at, to: next, label });
    if (i < log.length - 1) idle(next, next + gap, "idle (backoff)");
    at = next + gap;
  });
  if (live && to > at) {
    const running = task.status === "running";
    out.push({ kind: running ? "running" : "attempt", from: at, to, label: running ? "running" : "attempts" });
  }
  return out;
}

function reviewSpan(task, now) {
  const review = task.review;
  if (review && review.decided_at && review.waited_s != null) {
    const decided = Date.parse(review.decided_at);
    return [decided - review.waited_s * 1000, decided];
  }
  if (task.status === "waiting" && task.waitingMs) return [task.waitingMs, now];
  return null;
}

/** Spans inside [t0, t1] when no task was active: [[from, to]]. */
export function idleSpans(spans, t0, t1) {
  const sorted = spans.filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  const gaps = [];
  let reached = t0;
  for (const [a, b] of sorted) {
    if (a > reached) gaps.push([reached, a]);
    reached = Math.max(reached, b);
  }
  if (t1 > reached) gaps.push([reached, t1]);
  return gaps.filter(([a, b]) => b - a > 0.02 * (t1 - t0));
}

export class Gantt {
  constructor(container, onSelect) {
    this.scroll = document.createElement("div");
    this.scroll.className = "gantt-scroll";
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("role", "img");
    this.spacer = document.createElement("div");
    this.scroll.append(this.canvas, this.spacer);
    container.replaceChildren(this.scroll);
    this.rows = [];
    this.idle = [];
    this.t0 = 0;
    this.t1 = 1;
    this.scroll.addEventListener("scroll", () => this.draw());
    this.canvas.addEventListener("click", (event) => {
      const row = this.rowAt(event);
      if (row) onSelect(row.task.task_id);
    });
    this.canvas.addEventListener("mousemove", (event) => (this.canvas.title = this.describe(event)));
    new ResizeObserver(() => this.draw()).observe(this.scroll);
  }

  /** New data: `tasks` (the run page's task records), the run's start and end in ms (end null while live). */
  set(tasks, startMs, endMs, now = Date.now()) {
    this.now = now;
    const started = tasks.filter((t) => t.startedMs);
    started.sort((a, b) => a.startedMs - b.startedMs || (a.task_id < b.task_id ? -1 : 1));
    this.rows = started.map((task) => ({ task, segments: segments(task, now) }));
    const last = Math.max(0, ...started.map((t) => t.completedMs || now));
    this.t0 = startMs || (started[0] ? started[0].startedMs : now);
    this.t1 = Math.max(this.t0 + 1000, endMs || now, last);
    const spans = this.rows.map((r) => [r.task.startedMs, r.task.completedMs || now]);
    this.idle = idleSpans(spans, this.t0, this.t1);
    this.canvas.setAttribute("aria-label", `timeline of ${this.rows.length} started tasks`);
    this.draw();
  }

  rowAt(event) {
    const y = event.offsetY - AXIS_H;
    if (y < 0) return null;
    return this.rows[Math.floor((y + this.scroll.scrollTop) / ROW_H)] || null;
  }

  describe(event) {
    const row = this.rowAt(event);
    if (!row) return "";
    const t = this.t0 + ((event.offsetX - GUTTER) / (this.width - GUTTER - 8)) * (this.t1 - this.t0);
    const segment = row.segments.find((s) => s.from <= t && t <= s.to);
    const what = segment ? `${segment.label}, ${seconds((segment.to - segment.from) / 1000)}` : row.task.status;
    return `${row.task.task_id}: ${what}`;
  }

  draw() {
    const total = AXIS_H + this.rows.length * ROW_H;
    const height = Math.min(MAX_H, Math.max(total, AXIS_H + ROW_H));
    this.scroll.style.height = `${height}px`;
    this.spacer.style.height = `${Math.max(0, total - height)}px`;
    const width = this.scroll.clientWidth;
    if (!width) return;
    this.width = width;
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== width * ratio || this.canvas.height !== height * ratio) {
      this.canvas.width = width * ratio;
      this.canvas.height = height * ratio;
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    const span = this.t1 - this.t0;
    const x = (t) => GUTTER + ((t - this.t0) / span) * (width - GUTTER - 8);

    ctx.fillStyle = COLOURS.runIdle;
    for (const [a, b] of this.idle) ctx.fillRect(x(a), AXIS_H, Math.max(1, x(b) - x(a)), height - AXIS_H);
    this.drawAxis(ctx, x, width, height, span);

    const first = Math.floor(this.scroll.scrollTop / ROW_H);
    const last = Math.min(this.rows.length, first + Math.ceil((height - AXIS_H) / ROW_H) + 1);
    const offset = AXIS_H - (this.scroll.scrollTop % ROW_H);
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, AXIS_H, width, height - AXIS_H);
    ctx.clip();
    for (let i = first; i < last; i++) {
      const { task, segments } = this.rows[i];
      const top = offset + (i - first) * ROW_H;
      ctx.fillStyle = "#39414d";
      ctx.fillText(clip(ctx, task.task_id, GUTTER - 12), 6, top + ROW_H / 2);
      for (const s of segments) {
        ctx.fillStyle = COLOURS[s.kind];
        const h = s.kind === "idle" ? 4 : ROW_H - 6;
        ctx.fillRect(x(s.from), top + (ROW_H - h) / 2, Math.max(1.5, x(s.to) - x(s.from)), h);
      }
    }
    ctx.restore();
  }

  drawAxis(ctx, x, width, height, span) {
    const pixelsPerSecond = (width - GUTTER - 8) / (span / 1000);
    const step = STEPS.find((s) => s * pixelsPerSecond >= 90) || STEPS[STEPS.length - 1];
    ctx.fillStyle = "#f6f7f9";
    ctx.fillRect(0, 0, width, AXIS_H);
    ctx.strokeStyle = "#e3e6ea";
    ctx.fillStyle = "#5b6470";
    ctx.beginPath();
    for (let s = 0; s * 1000 <= span; s += step) {
      const px = Math.round(x(this.t0 + s * 1000)) + 0.5;
      ctx.moveTo(px, AXIS_H - 6);
      ctx.lineTo(px, height);
      ctx.fillText(seconds(s), px + 3, AXIS_H / 2);
    }
    ctx.stroke();
  }
}

function clip(ctx, text, max) {
  if (ctx.measureText(text).width <= max) return text;
  while (text.length > 1 && ctx.measureText(text + "…").width > max) text = text.slice(0, -1);
  return text + "…";
}
