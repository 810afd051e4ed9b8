// Review gates: a card per open gate with approve / edit / reject, and the queue of every open gate.

import { api, newId } from "./api.js";
import { ago, h, pretty, reason, time } from "./dom.js";
import { validate } from "./schema.js";

const ACTOR_KEY = "orchestrate-actor";

export function gateKey(gate) {
  return `${gate.run_id}/${gate.task_id}/${gate.stage}/${gate.attempt}/${gate.digest}`;
}

/** What the gate holds: the answer (stage after) or the request (stage before). */
function payloadView(gate) {
  const p = gate.payload || {};
  if (gate.stage === "before") {
    return h(
      "div",
      { class: "payload" },
      p.system_prompt ? [h("h4", {}, "System prompt"), h("pre", {}, p.system_prompt)] : null,
      h("h4", {}, "Prompt"),
      h("pre", {}, p.prompt ?? ""),
    );
  }
  return h("div", { class: "payload" }, h("h4", {}, "Answer"), h("pre", {}, pretty(p.output ?? "")));
}

/**
 * A card for an open `gate`: its payload and the three decisions. An edit of a json task's answer is checked
 * against the task's output_schema (fetched when the form opens) before it is sent. `onDecided(gate)` runs
 * after the server recorded the decision.
 */
export function reviewCard(gate, { onDecided = () => {}, inQueue = true } = {}) {
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "decision-form", hidden: true });
  const buttons = h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "primary", "data-action": "approve", onclick: () => send("approve") }, "Approve"),
    h("button", { type: "button", "data-action": "edit", onclick: () => openForm("edit") }, "Edit…"),
    h("button", { type: "button", class: "danger", "data-action": "reject", onclick: () => openForm("reject") }, "Reject…"),
  );
  const runLink = h("a", { href: `#/runs/${encodeURIComponent(gate.run_id)}` }, gate.run_id);
  const card = h(
    "article",
    { class: "review", "data-gate": `${gate.run_id}/${gate.task_id}`, "aria-label": `review of task ${gate.task_id}` },
    h(
      "header",
      {},
      inQueue ? [h("strong", {}, gate.task_id), " in ", runLink] : h("strong", {}, "Waits for review"),
      h("span", { class: "badge" }, gate.stage === "before" ? "request (before)" : "answer (after)"),
      gate.fired && gate.fired.length ? h("span", { class: "muted" }, `fired: ${gate.fired.join(", ")}`) : null,
      h("span", { class: "muted" }, `waiting since ${time(gate.requested_at)}`),
      gate.expires_at ? h("span", { class: "muted" }, `expires ${ago(gate.expires_at)}`) : null,
    ),
    payloadView(gate),
    buttons,
    form,
    status,
  );

  function busy(on) {
    card.querySelectorAll("button").forEach((b) => (b.disabled = on));
  }

  async function send(decision, fields = {}) {
    const body = { decision, decision_id: newId(), digest: gate.digest, ...fields };
    const actor = localStorage.getItem(ACTOR_KEY);
    if (actor) body.actor = actor;
    busy(true);
    status.className = "form-status";
    status.textContent = "Sending…";
    try {
      const answer = await api(`/api/runs/${enc(gate.run_id)}/tasks/${enc(gate.task_id)}/review`, { method: "POST", body });
      status.textContent = `Recorded: ${decision}.`;
      card.classList.add("decided");
      form.hidden = true;
      onDecided(answer.gate);
    } catch (error) {
      status.className = "form-status error";
      status.textContent = error.status === 409 ? `Refused: ${reason(error)}` : reason(error);
      busy(false);
    }
  }

  async function openForm(decision) {
    const fields = [];
    const message = h("input", { type: "text", name: "message", required: decision === "reject" });
    let check = () => [];
    let collect = () => ({});
    if (decision === "edit" && gate.stage === "before") {
      const system = h("textarea", { name: "system_prompt", rows: 3, value: gate.payload?.system_prompt ?? "" });
      const prompt = h("textarea", { name: "prompt", rows: 6, value: gate.payload?.prompt ?? "" });
      fields.push(label("System prompt", system), label("Prompt", prompt));
      collect = () => ({ system_prompt: system.value, prompt: prompt.value });
    } else if (decision === "edit") {
      const output = h("textarea", { name: "output", rows: 8, value: pretty(gate.payload?.output ?? "") });
      const note = h("p", { class: "muted" }, "Loading the task's output format…");
      fields.push(label("Answer", output), note);
      collect = () => ({ output: output.value });
      api(`/api/runs/${enc(gate.run_id)}/tasks/${enc(gate.task_id)}`)
        .then((task) => {
          if (task.output_format !== "json") {
            note.textContent = "Plain text answer.";
            return;
          }
          note.textContent = task.output_schema ? "JSON, checked against the task's output schema." : "JSON.";
          check = () => jsonProblems(output.value, task.output_schema);
        })
        .catch((error) => (note.textContent = `Could not load the task: ${reason(error)}`));
    }
    fields.push(label(decision === "reject" ? "Reason (required)" : "Message (optional)", message));
    const problems = h("ul", { class: "problems", role: "alert" });
    const submit = h("button", { type: "submit", class: decision === "reject" ? "danger" : "primary" }, decision === "reject" ? "Send rejection" : "Send edit");
    const cancel = h("button", { type: "button", onclick: () => (form.hidden = true) }, "Cancel");
    form.replaceChildren(...fields, problems, h("div", { class: "actions" }, submit, cancel));
    form.onsubmit = (event) => {
      event.preventDefault();
      const found = check();
      problems.replaceChildren(...found.map((p) => h("li", {}, p)));
      if (found.length) return;
      send(decision, { ...collect(), ...(message.value ? { message: message.value } : {}) });
    };
    form.hidden = false;
    form.querySelector("textarea, input")?.focus();
  }

  return card;
}

/** Problems of an edited json answer: not JSON at all, or not matching `schema`. */
export function jsonProblems(text, schema) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return [`Not valid JSON: ${error.message}`];
  }
  return schema ? validate(value, schema) : [];
}

function label(text, control) {
  return h("label", { class: "field" }, h("span", {}, text), control);
}

function enc(part) {
  return encodeURIComponent(part);
}

/** The review queue: every open gate; `refresh()` reloads it (the page polls it), keeping the forms being filled. */
export function reviewsView(main, { onChange }) {
  const actor = h("input", {
    id: "actor",
    type: "text",
    placeholder: "the server's default",
    value: localStorage.getItem(ACTOR_KEY) || "",
    oninput: () => localStorage.setItem(ACTOR_KEY, actor.value.trim()),
  });
  const list = h("div", { id: "reviews-list", class: "reviews" });
  const empty = h("p", { class: "empty", hidden: true }, "No review is waiting.");
  const error = h("p", { class: "error", role: "alert" });
  main.replaceChildren(
    h("div", { class: "view-head" }, h("h1", {}, "Review queue"), h("label", { class: "inline" }, "Decide as ", actor)),
    error,
    empty,
    list,
  );
  const cards = new Map();

  async function load() {
    try {
      const { reviews } = await api("/api/reviews");
      error.textContent = "";
      const keys = new Set(reviews.map(gateKey));
      for (const [key, card] of cards) {
        if (!keys.has(key) && !card.classList.contains("decided")) {
          card.remove();
          cards.delete(key);
        }
      }
      for (const gate of reviews) {
        const key = gateKey(gate);
        if (!cards.has(key)) {
          const card = reviewCard(gate, {
            onDecided: (decided) => {
              onChange(decided);
              setTimeout(() => cards.get(key) === card && (card.remove(), cards.delete(key)), 3000);
            },
          });
          cards.set(key, card);
          list.append(card);
        }
      }
      empty.hidden = reviews.length > 0 || cards.size > 0;
    } catch (e) {
      error.textContent = `Could not load the reviews: ${reason(e)}`;
    }
  }

  load();
  return { refresh: load, close() {} };
}
