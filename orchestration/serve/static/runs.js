// The runs list (kept live from the event stream) and the form that starts a run.

import { api } from "./api.js";
import { h, money, pill, reason, seconds, time } from "./dom.js";

const RUN_STATUSES = ["running", "waiting", "success", "failed", "cancelled"];

function runDuration(run) {
  if (run.duration_s !== null && run.duration_s !== undefined && run.status !== "running") return run.duration_s;
  return run.started_at ? (Date.now() - Date.parse(run.started_at)) / 1000 : null;
}

function progress(run) {
  const counts = run.counts || {};
  const done = (counts.success || 0) + (counts.failed || 0) + (counts.skipped || 0) + (counts.cancelled || 0);
  const bar = h("span", { class: "minibar", "aria-hidden": "true" });
  for (const status of ["success", "failed", "skipped", "cancelled", "waiting", "running"]) {
    if (counts[status]) bar.append(h("span", { "data-status": status, style: `flex-grow: ${counts[status]}` }));
  }
  if (run.tasks > done) bar.append(h("span", { "data-status": "pending", style: `flex-grow: ${run.tasks - done}` }));
  return h("span", { class: "progress" }, bar, `${done}/${run.tasks}`);
}

function row(run) {
  const link = h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id);
  const reviews = run.open_reviews ? h("a", { class: "badge warn", href: "#/reviews" }, String(run.open_reviews)) : "–";
  return h(
    "tr",
    { "data-run-id": run.run_id, "data-status": run.status },
    h("td", {}, pill(run.status)),
    h("td", { class: "mono" }, link),
    h("td", {}, run.project),
    h("td", {}, time(run.started_at)),
    h("td", { class: "num duration" }, seconds(runDuration(run))),
    h("td", { class: "num" }, money(run.cost_usd)),
    h("td", {}, progress(run)),
    h("td", { class: "num" }, reviews),
  );
}

/** Every run, newest first, with a status filter; `refresh()` reloads it (the page polls it). */
export function runsView(main) {
  const filter = h(
    "select",
    { id: "runs-status-filter", onchange: () => load() },
    h("option", { value: "" }, "any status"),
    RUN_STATUSES.map((s) => h("option", { value: s }, s)),
  );
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, "No runs yet. ", h("a", { href: "#/new" }, "Start one."));
  const error = h("p", { class: "error", role: "alert" });
  const headers = ["Status", "Run", "Project", "Started", "Duration", "Cost", "Tasks", "Reviews"];
  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-run-id]");
    if (tr && !event.target.closest("a")) location.hash = `#/runs/${encodeURIComponent(tr.dataset.runId)}`;
  });
  main.replaceChildren(
    h("div", { class: "view-head" }, h("h1", {}, "Runs"), h("label", { class: "inline" }, "Status ", filter)),
    error,
    h("table", { id: "runs-table", class: "table" }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), body),
    empty,
  );
  let runs = [];
  let shown = new Map(); // run id → {key, tr}: a row is rebuilt only when its run changed (focus stays put)

  async function load() {
    try {
      const query = filter.value ? `&status=${filter.value}` : "";
      ({ runs } = await api(`/api/runs?limit=200${query}`));
      error.textContent = "";
      const next = new Map();
      for (const run of runs) {
        const key = JSON.stringify({ ...run, duration_s: run.status === "running" ? null : run.duration_s });
        const old = shown.get(run.run_id);
        next.set(run.run_id, old && old.key === key ? old : { key, tr: row(run) });
      }
      shown = next;
      const trs = [...next.values()].map((r) => r.tr);
      if (trs.length !== body.rows.length || trs.some((tr, i) => body.rows[i] !== tr)) body.replaceChildren(...trs);
      empty.hidden = runs.length > 0;
    } catch (e) {
      error.textContent = `Could not load the runs: ${reason(e)}`;
    }
  }

  const ticker = setInterval(() => {
    runs.forEach((run, i) => {
      if (run.status === "running") body.rows[i]?.querySelector(".duration")?.replaceChildren(seconds(runDuration(run)));
    });
  }, 1000);
  load();
  return { refresh: load, close: () => clearInterval(ticker) };
}

/** Starts a run of a task file under --projects; the server's 422 issues are listed. */
export function newRunView(main) {
  const project = h("select", { id: "project", required: true });
  const inputs = h("textarea", { id: "run-inputs", rows: 5, spellcheck: "false", value: "{}" });
  const concurrency = h("input", { id: "max-concurrency", type: "number", min: 1, placeholder: "the project's own" });
  const submit = h("button", { id: "start-run", type: "submit", class: "primary" }, "Start run");
  const issues = h("ul", { id: "run-issues", class: "problems", role: "alert" });
  const note = h("p", { class: "muted" });
  const form = h(
    "form",
    { id: "new-run", class: "panel form" },
    h("label", { class: "field" }, h("span", {}, "Project"), project),
    h("label", { class: "field" }, h("span", {}, "Inputs (JSON object, overrides the file's inputs)"), inputs),
    h("label", { class: "field" }, h("span", {}, "Max concurrency"), concurrency),
    issues,
    h("div", { class: "actions" }, submit),
  );
  main.replaceChildren(h("div", { class: "view-head" }, h("h1", {}, "Start a run")), note, form);

  api("/api/projects")
    .then(({ projects }) => {
      project.replaceChildren(...projects.map((p) => h("option", { value: p.path }, p.name ? `${p.name} — ${p.path}` : p.path)));
      if (!projects.length) {
        note.textContent = "No task files to offer: start the server with --projects DIR.";
        submit.disabled = true;
      }
    })
    .catch((e) => (note.textContent = `Could not list the projects: ${reason(e)}`));

  form.onsubmit = async (event) => {
    event.preventDefault();
    let values;
    try {
      values = JSON.parse(inputs.value || "{}");
      if (!values || typeof values !== "object" || Array.isArray(values)) throw new Error("inputs must be a JSON object");
    } catch (e) {
      issues.replaceChildren(h("li", {}, `Inputs: ${e.message}`));
      return;
    }
    const body = { path: project.value, inputs: values };
    if (concurrency.value) body.max_concurrency = Number(concurrency.value);
    submit.disabled = true;
    issues.replaceChildren();
    try {
      const { run_id } = await api("/api/runs", { method: "POST", body });
      location.hash = `#/runs/${encodeURIComponent(run_id)}`;
    } catch (e) {
      const found = e.body && Array.isArray(e.body.issues) ? e.body.issues.map(issueText) : [reason(e)];
      issues.replaceChildren(...found.map((text) => h("li", {}, text)));
      submit.disabled = false;
    }
  };
  return { close() {} };
}

/** An issue as the CLI prints it: `file:line: task 't', field 'f': message`. */
export function issueText(issue) {
  const where = [issue.file && (issue.line ? `${issue.file}:${issue.line}` : issue.file)];
  if (issue.task) where.push(`task '${issue.task}'`);
  if (issue.agent) where.push(`agent '${issue.agent}'`);
  if (issue.field) where.push(`field '${issue.field}'`);
  const prefix = where.filter(Boolean).join(", ");
  return prefix ? `${prefix}: ${issue.message}` : issue.message;
}
