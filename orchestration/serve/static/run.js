// One run: its graph, timeline, counts and costs kept live from the run's event stream, the task panel, and
// cancel / resume. Events only record what changed; the page is redrawn at most once per animation frame.

import { api, openStream } from "./api.js";
import { Dag } from "./dag.js";
import {
  facts,
  h,
  money,
  number,
  pill,
  pretty,
  reason,
  seconds,
  setPill,
  STATUS_MARK,
  TASK_STATUSES,
  throttle,
  time,
} from "./dom.js";
import { Gantt } from "./gantt.js";
import { reviewCard } from "./reviews.js";

const KIND_STATUS = {
  task_started: "running",
  task_succeeded: "success",
  task_failed: "failed",
  task_skipped: "skipped",
  task_cancelled: "cancelled",
  review_requested: "waiting",
  task_batched: "batched",
};
const FINAL_KINDS = new Set(["task_succeeded", "task_failed", "task_skipped", "task_cancelled"]);
/** Whether a run goes on (one "waiting" was stopped at a review gate by --no-wait: it is resumed). */
const live = (status) => status === "running";

const enc = encodeURIComponent;
const ms = (iso) => (iso ? Date.parse(iso) : null);
const iso = (epochSeconds) => new Date(epochSeconds * 1000).toISOString();

/** The page's record of a task: the API's TaskRow plus its times in epoch ms. */
function record(row) {
  return { ...row, startedMs: ms(row.started_at), completedMs: ms(row.completed_at), waitingMs: ms(row.waiting_since) };
}

export function runView(main, runId, { onChange }) {
  const statusEl = pill("pending", { id: "run-status" });
  const message = h("p", { id: "run-message", class: "form-status", role: "status", "aria-live": "polite" });
  const cancelButton = h("button", { id: "cancel-run", type: "button", class: "danger", onclick: () => act("cancel") }, "Cancel run");
  const resumeButton = h(
    "button",
    { id: "resume-run", type: "button", title: "Run again what did not succeed (a run whose process died too)", onclick: () => act("resume") },
    "Resume",
  );
  const factsBox = h("div", { id: "run-facts" });
  const counts = h("div", { id: "run-counts", class: "counts" });
  const dagBox = h("div", { id: "dag", class: "dag-box" }, h("p", { class: "muted" }, "Loading…"));
  const ganttBox = h("div", { id: "gantt" });
  const panel = h("section", { id: "task-panel", class: "panel", "aria-label": "task" });
  const costs = h("table", { id: "cost-by-agent", class: "table compact" });
  const find = h("input", { id: "task-find", type: "search", placeholder: "task id", "aria-label": "find a task" });
  const streamState = h("span", { class: "muted", id: "run-stream" });
  const zoom = (label, text, f) => h("button", { type: "button", class: "tool", "aria-label": label, onclick: f }, text);

  main.replaceChildren(
    h(
      "div",
      { class: "view-head" },
      h("div", {}, h("a", { href: "#/", class: "back" }, "← Runs"), h("h1", {}, "Run ", h("span", { class: "mono" }, runId), " ", statusEl)),
      h("div", { class: "actions" }, streamState, cancelButton, resumeButton),
    ),
    message,
    factsBox,
    counts,
    h(
      "div",
      { class: "run-grid" },
      h(
        "div",
        { class: "run-main" },
        h(
          "section",
          { class: "panel", "aria-label": "task graph" },
          h(
            "div",
            { class: "panel-head" },
            h("h2", {}, "Graph"),
            h(
              "form",
              { class: "tools", onsubmit: (e) => (e.preventDefault(), findTask()) },
              find,
              zoom("zoom out", "−", () => state.dag?.zoom(state.dag.scale / 1.25)),
              zoom("fit the graph", "Fit", () => state.dag?.fit()),
              zoom("zoom in", "+", () => state.dag?.zoom(state.dag.scale * 1.25)),
            ),
          ),
          dagBox,
        ),
        h(
          "section",
          { class: "panel", "aria-label": "timeline" },
          h("div", { class: "panel-head" }, h("h2", {}, "Timeline"), legend()),
          ganttBox,
        ),
      ),
      h("aside", { class: "run-side" }, panel, h("section", { class: "panel" }, h("h2", {}, "Cost by agent"), costs)),
    ),
  );
  panel.replaceChildren(h("h2", {}, "Task"), h("p", { class: "muted" }, "Select a task in the graph or the timeline."));

  const state = {
    run: null,
    tasks: new Map(),
    changed: new Map(),
    costByAgent: {},
    selected: null,
    dag: null,
    gantt: null,
    lastId: null,
    lastKind: null,
    frame: 0,
    closed: false,
  };
  let stream = null;

  /**
   * Follows the run's events. The first connection reads them all from the run's first (so nothing between the
   * detail and the stream is missed; replaying ends in the state the detail showed); later ones go on after the
   * last event seen. The server ends the stream once the run stopped.
   */
  function connect() {
    stream?.close();
    stream = openStream(`/api/runs/${enc(runId)}/events`, {
      lastId: state.lastId,
      reconnect: () => state.lastKind !== "run_finished",
      onEvent: (event) => {
        if (event.id !== null) state.lastId = event.id;
        state.lastKind = event.kind;
        apply(event);
      },
      onState: (s) => {
        streamState.textContent = s === "live" ? "● live" : s === "reconnecting" ? "reconnecting…" : "";
      },
    });
  }

  async function load() {
    let detail;
    try {
      detail = await api(`/api/runs/${enc(runId)}`);
    } catch (error) {
      dagBox.replaceChildren(h("p", { class: "error" }, `Could not load run ${runId}: ${reason(error)}`));
      if (error.status !== 404 && !state.closed) setTimeout(load, 3000);
      return;
    }
    if (state.closed) return;
    take(detail);
    state.dag = new Dag(dagBox, detail.tasks, select);
    state.gantt = new Gantt(ganttBox, select);
    schedule();
    redrawGantt();
    if (live(detail.status)) connect();
  }

  /** Takes a RunDetail as the truth (first load, and again once the run finished). */
  function take(detail) {
    const { tasks, cost_by_agent, ...run } = detail;
    state.run = run;
    state.costByAgent = { ...cost_by_agent };
    state.tasks = new Map(tasks.map((row) => [row.task_id, record(row)]));
    for (const task of tasks) state.changed.set(task.task_id, task.status);
  }

  const reload = throttle(async () => {
    try {
      const detail = await api(`/api/runs/${enc(runId)}`);
      const same = detail.tasks.length === state.tasks.size && detail.tasks.every((t) => state.tasks.has(t.task_id));
      take(detail);
      if (!same) state.dag = new Dag(dagBox, detail.tasks, select);
      schedule();
      redrawGantt();
      if (state.selected) refreshPanel();
    } catch (error) {
      message.textContent = `Could not reload the run: ${reason(error)}`;
    }
  }, 300);

  function apply({ kind, data }) {
    const run = state.run;
    if (data.run_id && data.run_id !== runId) return;
    if (kind === "run_started") {
      run.status = "running"; // a new session: what did not succeed runs again
      run.finished_at = null;
      for (const task of state.tasks.values()) {
        if (task.status !== "success") setStatus(task, "pending");
      }
    } else if (kind === "run_finished") {
      run.status = data.run_status || run.status;
      run.finished_at = iso(data.timestamp);
      run.duration_s = run.started_at ? data.timestamp - ms(run.started_at) / 1000 : run.duration_s;
      reload();
    } else if (kind === "endpoint_paced") {
      message.textContent = `Endpoint ${data.endpoint} paced: ${paceText(data.pace)}`;
    } else if (data.task_id && state.tasks.has(data.task_id)) {
      applyTask(state.tasks.get(data.task_id), kind, data);
    }
    schedule();
  }

  function applyTask(task, kind, data) {
    const at = data.timestamp * 1000;
    if (kind === "task_started") {
      task.startedMs = at; // (a waiting task's row says when it began to wait, not when it started)
      task.completedMs = null;
    } else if (kind === "review_requested") {
      task.waitingMs = at;
      if (task.status !== "waiting") state.run.open_reviews = (state.run.open_reviews || 0) + 1;
    } else if (kind === "review_decided") {
      const gate = data.gate || {};
      const decided = ms(gate.decided_at) || at;
      const requested = ms(gate.requested_at) || task.waitingMs || decided;
      task.review = { decision: gate.decision, actor: gate.actor, decided_at: new Date(decided).toISOString(), waited_s: (decided - requested) / 1000 };
      task.waitingMs = null;
      state.run.open_reviews = Math.max(0, (state.run.open_reviews || 0) - 1);
    } else if (FINAL_KINDS.has(kind)) {
      task.completedMs = at;
      if (!task.startedMs && data.duration_s) task.startedMs = at - data.duration_s * 1000;
      const cost = data.cost_usd ?? task.cost_usd;
      const delta = (cost || 0) - (task.cost_usd || 0);
      if (delta) {
        const agent = data.agent || task.agent || "?";
        state.costByAgent[agent] = (state.costByAgent[agent] || 0) + delta;
        state.run.cost_usd = (state.run.cost_usd || 0) + delta;
      }
      Object.assign(task, { cost_usd: cost, attempts: data.attempts ?? task.attempts, error_type: data.error_type });
      task.duration_s = data.duration_s ?? task.duration_s;
    }
    setStatus(task, data.status || KIND_STATUS[kind] || task.status);
  }

  function setStatus(task, status) {
    task.status = status;
    state.changed.set(task.task_id, status);
    if (task.task_id === state.selected) refreshPanel();
  }

  function schedule() {
    if (!state.frame && !state.closed) state.frame = requestAnimationFrame(flush);
  }

  /** Once per frame: the changed tasks in the graph, the head, and (throttled) the timeline. */
  function flush() {
    state.frame = 0;
    if (!state.run) return;
    if (state.changed.size) {
      state.dag?.update(state.changed);
      state.changed.clear();
      redrawGantt();
    }
    renderHead();
  }

  const redrawGantt = throttle(() => {
    if (state.gantt && state.run) state.gantt.set([...state.tasks.values()], ms(state.run.started_at), ms(state.run.finished_at));
  }, 250);

  function renderHead() {
    const run = state.run;
    setPill(statusEl, run.status);
    const tally = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0]));
    for (const task of state.tasks.values()) tally[task.status] = (tally[task.status] || 0) + 1;
    const going = live(run.status);
    const duration = going && run.started_at ? (Date.now() - ms(run.started_at)) / 1000 : run.duration_s;
    factsBox.replaceChildren(
      facts([
        ["Project", run.project],
        ["Started", time(run.started_at)],
        ["Duration", seconds(duration)],
        ["Cost", money(run.cost_usd)],
        ["Tasks", number(state.tasks.size)],
        ["Open reviews", run.open_reviews ? h("a", { href: "#/reviews" }, String(run.open_reviews)) : "0"],
      ]),
    );
    const done = tally.success + tally.failed + tally.skipped + tally.cancelled;
    counts.replaceChildren(
      h(
        "div",
        { class: "bar", role: "img", "aria-label": `${done} of ${state.tasks.size} tasks finished` },
        TASK_STATUSES.filter((s) => tally[s]).map((s) => h("span", { "data-status": s, style: `flex-grow: ${tally[s]}` })),
      ),
      h(
        "div",
        { class: "chips" },
        TASK_STATUSES.filter((s) => tally[s]).map((s) => h("span", { class: "chip", "data-status": s }, `${STATUS_MARK[s]} ${tally[s]} ${s}`)),
      ),
    );
    renderCosts();
    cancelButton.disabled = !going;
    resumeButton.disabled = run.status === "success";
  }

  function renderCosts() {
    const entries = Object.entries(state.costByAgent).sort((a, b) => b[1] - a[1]);
    const top = Math.max(1e-12, ...entries.map(([, v]) => v || 0));
    costs.replaceChildren(
      ...entries.map(([agent, usd]) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, agent),
          h("td", { class: "num" }, money(usd)),
          h("td", { class: "costbar" }, h("span", { style: `width: ${Math.round(((usd || 0) / top) * 100)}%` })),
        ),
      ),
    );
    if (!entries.length) costs.replaceChildren(h("tr", {}, h("td", { class: "muted" }, "No cost recorded.")));
  }

  async function act(what) {
    const button = what === "cancel" ? cancelButton : resumeButton;
    button.disabled = true;
    message.className = "form-status";
    message.textContent = what === "cancel" ? "Cancelling…" : "Resuming…";
    try {
      await api(`/api/runs/${enc(runId)}/${what}`, { method: "POST" });
      message.textContent = what === "cancel" ? "Cancel requested." : "Resumed.";
      if (what === "resume") {
        state.run.status = "running";
        state.run.finished_at = null;
        connect();
        reload();
      }
    } catch (error) {
      message.className = "form-status error";
      message.textContent = `Could not ${what}: ${reason(error)}`;
    }
    schedule();
  }

  function findTask() {
    const query = find.value.trim();
    if (!query) return;
    const id = state.tasks.has(query) ? query : [...state.tasks.keys()].find((k) => k.includes(query));
    if (id) {
      select(id);
      state.dag.reveal(id);
    } else {
      message.textContent = `No task matches "${query}".`;
    }
  }

  function select(id) {
    state.selected = id;
    state.dag?.select(id);
    panel.replaceChildren(h("h2", {}, id), h("p", { class: "muted" }, "Loading…"));
    loadPanel();
  }

  async function loadPanel() {
    const id = state.selected;
    if (!id || panel.querySelector(".decision-form:not([hidden])")) return; // never drop a form being filled in
    try {
      const task = await api(`/api/runs/${enc(runId)}/tasks/${enc(id)}`);
      if (state.selected === id) panel.replaceChildren(...taskPanel(task));
    } catch (error) {
      if (state.selected === id) panel.replaceChildren(h("h2", {}, id), h("p", { class: "error" }, reason(error)));
    }
  }
  const refreshPanel = throttle(loadPanel, 500);

  function taskPanel(task) {
    const onDecided = () => {
      onChange();
      refreshPanel();
    };
    const parts = [
      h("div", { class: "panel-head" }, h("h2", { class: "mono" }, task.task_id), pill(task.status)),
      task.gate ? reviewCard(task.gate, { onDecided, inQueue: false }) : null,
      task.error ? h("div", { class: "error-box" }, h("strong", {}, task.error.type), ": ", task.error.message) : null,
      facts([
        ["Agent", [task.agent, task.provider || task.model ? ` (${[task.provider, task.model].filter(Boolean).join(" · ")})` : ""].join("")],
        ["Started", time(task.started_at)],
        ["Completed", time(task.completed_at)],
        ["Duration", seconds(task.duration_s)],
        ["Attempts", number(task.attempts)],
        ["Tokens", usageText(task.usage)],
        ["Cost", money(task.cost_usd)],
        ["Finish reason", task.finish_reason || "–"],
        ["Depends on", (task.depends_on || []).join(", ") || "–"],
      ]),
      task.review ? reviewRecord(task.review) : null,
      attemptsTable(task.attempt_log || []),
      h("details", { open: true }, h("summary", {}, "Prompt"), requestView(task.request)),
      h("details", { open: true }, h("summary", {}, `Output${task.output_format === "json" ? " (JSON)" : ""}`), outputView(task)),
    ];
    return parts.filter(Boolean);
  }

  const ticker = setInterval(() => {
    if (state.run && live(state.run.status)) {
      renderHead();
      redrawGantt();
    }
  }, 1000);
  load();

  return {
    close() {
      state.closed = true;
      stream?.close();
      clearInterval(ticker);
      if (state.frame) cancelAnimationFrame(state.frame);
    },
  };
}

function legend() {
  const items = [
    ["attempt", "attempt"],
    ["failedAttempt", "failed attempt"],
    ["running", "running"],
    ["review", "review wait"],
    ["idle", "idle in a task"],
    ["runIdle", "nothing running"],
  ];
  return h(
    "ul",
    { class: "legend", "aria-label": "timeline legend" },
    items.map(([kind, text]) => h("li", {}, h("span", { class: "swatch", "data-kind": kind, "aria-hidden": "true" }), text)),
  );
}

function usageText(usage) {
  if (!usage) return "–";
  const parts = [`${number(usage.input_tokens)} in`, `${number(usage.output_tokens)} out`];
  if (usage.cache_read_tokens) parts.push(`${number(usage.cache_read_tokens)} cache read`);
  if (usage.reasoning_tokens) parts.push(`${number(usage.reasoning_tokens)} reasoning`);
  return parts.join(" · ");
}

function reviewRecord(review) {
  const who = `${review.decision}${review.actor ? " by " + review.actor : ""}`;
  return h(
    "div",
    { class: "review-record" },
    h("strong", {}, "Review: "),
    who,
    review.waited_s != null ? ` after ${seconds(review.waited_s)}` : "",
    review.message ? h("p", {}, review.message) : null,
    review.edited && review.original_output != null
      ? h("details", {}, h("summary", {}, "Answer before the edit"), h("pre", {}, pretty(review.original_output)))
      : null,
  );
}

function attemptsTable(log) {
  if (!log.length) return null;
  return h(
    "table",
    { class: "table compact attempts" },
    h("caption", {}, "Attempts"),
    h("thead", {}, h("tr", {}, ["#", "Agent", "Result", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      log.map((a, i) =>
        h(
          "tr",
          {},
          h("td", {}, String(i + 1)),
          h("td", {}, a.agent || "–"),
          h("td", { class: a.error_type ? "bad" : "good" }, a.error_type || "ok"),
          h("td", { class: "num" }, seconds(a.duration_s)),
        ),
      ),
    ),
  );
}

function requestView(request) {
  if (!request) return h("p", { class: "muted" }, "(not recorded)");
  return h(
    "div",
    {},
    request.map((m) => [h("h4", {}, m.role), h("pre", {}, typeof m.content === "string" ? m.content : pretty(m.content))]),
  );
}

function outputView(task) {
  if (task.output === null || task.output === undefined) return h("p", { class: "muted" }, "(no output)");
  const text = task.output_format === "json" ? pretty(task.parsed ?? task.output) : task.output;
  return h("pre", { class: "output" }, text);
}

function paceText(pace) {
  if (!pace) return "";
  if (typeof pace !== "object") return String(pace);
  return Object.entries(pace)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${typeof v === "number" ? Math.round(v * 100) / 100 : v}`)
    .join(", ");
}
