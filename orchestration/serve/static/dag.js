// The task graph: a layered layout (column = dependency depth), drawn once; a status change only touches that
// task's element. Tasks are HTML boxes grouped in blocks of CHUNK with `content-visibility: auto`, so the browser
// lays out and paints only the blocks near the view (a 5,000-task graph costs about what the visible part does);
// the edges are one SVG path under them.

import { STATUS_MARK } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 176;
const NODE_H = 40;
const GAP_X = 56;
const GAP_Y = 12;
const PAD = 16;
const CHUNK = 40;
const CENTRED = 24; // columns are centred in graphs up to this tall; larger ones start at the top, in view

/**
 * Positions for `tasks` ([{task_id, depends_on}]): each task's column is its longest path from a root;
 * within a column, tasks are ordered by the mean row of their dependencies (one pass down, one pass up) to
 * keep edges short. Returns {positions: Map(id → {x, y, column, row}), width, height}.
 */
export function layout(tasks) {
  const ids = new Map(tasks.map((t, i) => [t.task_id, i]));
  const parents = tasks.map((t) => (t.depends_on || []).filter((d) => ids.has(d)).map((d) => ids.get(d)));
  const children = tasks.map(() => []);
  parents.forEach((ps, i) => ps.forEach((p) => children[p].push(i)));

  const depth = new Array(tasks.length).fill(0);
  const waiting = parents.map((ps) => ps.length);
  const queue = waiting.flatMap((n, i) => (n === 0 ? [i] : []));
  for (let head = 0; head < queue.length; head++) {
    const i = queue[head];
    for (const c of children[i]) {
      depth[c] = Math.max(depth[c], depth[i] + 1);
      if (--waiting[c] === 0) queue.push(c);
    }
  }

  const columns = [];
  tasks.forEach((_, i) => (columns[depth[i]] ||= []).push(i));
  const row = new Float64Array(tasks.length);
  const place = (column) => column.forEach((i, r) => (row[i] = r));
  columns.forEach(place);
  const sortBy = (column, neighbours) => {
    const key = new Map(column.map((i) => [i, mean(neighbours[i], row, row[i])]));
    column.sort((a, b) => key.get(a) - key.get(b));
    place(column);
  };
  for (let c = 1; c < columns.length; c++) sortBy(columns[c], parents);
  for (let c = columns.length - 2; c >= 0; c--) sortBy(columns[c], children);

  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const positions = new Map();
  columns.forEach((column, c) => {
    const offset = tallest <= CENTRED ? ((tallest - column.length) * (NODE_H + GAP_Y)) / 2 : 0;
    column.forEach((i, r) => {
      positions.set(tasks[i].task_id, { x: PAD + c * (NODE_W + GAP_X), y: PAD + offset + r * (NODE_H + GAP_Y), column: c, row: r });
    });
  });
  return {
    positions,
    width: 2 * PAD + columns.length * (NODE_W + GAP_X) - GAP_X,
    height: 2 * PAD + tallest * (NODE_H + GAP_Y) - GAP_Y,
  };
}

function mean(neighbours, row, fallback) {
  if (!neighbours.length) return fallback;
  let sum = 0;
  for (const n of neighbours) sum += row[n];
  return sum / neighbours.length;
}

function svg(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function box(className, x, y, width, height) {
  const node = document.createElement("div");
  node.className = className;
  node.style.cssText = `left:${x}px;top:${y}px;width:${width}px;height:${height}px`;
  return node;
}

function shorten(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function curve(from, to) {
  const x1 = from.x + NODE_W;
  const y1 = from.y + NODE_H / 2;
  const x2 = to.x;
  const y2 = to.y + NODE_H / 2;
  const mid = (x1 + x2) / 2;
  return `M${x1},${y1}C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
}

/** The graph of `tasks` drawn into `container` (a scrolling box); `onSelect(taskId)` on click or Enter. */
export class Dag {
  constructor(container, tasks, onSelect) {
    const { positions, width, height } = layout(tasks);
    Object.assign(this, { container, positions, width, height, scale: 1, selected: null });
    this.tasks = new Map(tasks.map((t) => [t.task_id, t]));
    this.children = new Map(tasks.map((t) => [t.task_id, []]));
    for (const task of tasks) for (const dep of task.depends_on || []) this.children.get(dep)?.push(task.task_id);

    this.sizer = document.createElement("div");
    this.sizer.className = "dag-sizer";
    this.plane = box("dag-plane", 0, 0, width, height);
    this.plane.style.setProperty("--node-h", `${NODE_H}px`);
    this.plane.style.setProperty("--gap-y", `${GAP_Y}px`);
    this.plane.setAttribute("role", "group");
    this.plane.setAttribute("aria-label", `task graph, ${tasks.length} tasks`);
    const edges = svg("svg", { width, height, class: "dag-edges", "aria-hidden": "true" });
    edges.append(svg("path", { d: this.edgePath(tasks), class: "edges" }));
    this.highlight = svg("path", { d: "", class: "edges highlight" });
    edges.append(this.highlight);
    this.plane.append(edges);

    this.nodes = new Map();
    const chunks = new Map();
    for (const task of tasks) {
      const p = positions.get(task.task_id);
      const key = `${p.column}:${Math.floor(p.row / CHUNK)}`;
      if (!chunks.has(key)) chunks.set(key, []);
      chunks.get(key)[p.row % CHUNK] = task;
    }
    for (const members of chunks.values()) {
      const { x, y } = positions.get(members[0].task_id);
      const chunk = box("dag-chunk", x, y, NODE_W, members.length * (NODE_H + GAP_Y) - GAP_Y);
      for (const task of members) chunk.append(this.node(task).g);
      this.plane.append(chunk);
    }
    this.sizer.append(this.plane);
    container.replaceChildren(this.sizer);

    this.plane.addEventListener("click", (event) => this.picked(event, onSelect));
    this.plane.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.picked(event, onSelect);
      }
    });
    this.zoom(Math.max(0.6, Math.min(1, (container.clientWidth || width) / width)));
  }

  edgePath(tasks) {
    const parts = [];
    for (const task of tasks) {
      const to = this.positions.get(task.task_id);
      for (const dep of task.depends_on || []) {
        const from = this.positions.get(dep);
        if (from) parts.push(curve(from, to));
      }
    }
    return parts.join("");
  }

  /** A task's box; it sits in its block's flow (a positioned box per task would make every frame slower). */
  node(task) {
    const g = document.createElement("div");
    g.className = "node";
    g.tabIndex = 0;
    g.setAttribute("role", "button");
    g.dataset.taskId = task.task_id;
    g.title = task.task_id;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = shorten(task.task_id, 23);
    const status = document.createElement("span");
    status.className = "status";
    g.append(label, status);
    const node = { g, status, value: null, agent: task.agent ? ` · ${shorten(task.agent, 12)}` : "" };
    this.setStatus(node, task.status);
    this.nodes.set(task.task_id, node);
    return node;
  }

  setStatus(node, status) {
    if (node.value === status) return;
    node.value = status;
    node.g.dataset.status = status;
    node.status.textContent = `${STATUS_MARK[status] || "?"} ${status}${node.agent}`;
  }

  /** Applies a Map(task id → status); only the tasks whose status changed are touched. */
  update(statuses) {
    for (const [id, status] of statuses) {
      const node = this.nodes.get(id);
      if (node) this.setStatus(node, status);
    }
  }

  /** Marks task `id` and draws its edges (to its dependencies and its dependents) over the others. */
  select(id) {
    this.selected?.g.classList.remove("selected");
    this.selected = this.nodes.get(id) || null;
    this.selected?.g.classList.add("selected");
    const at = this.positions.get(id);
    const paths = [];
    if (at) {
      for (const dep of this.tasks.get(id).depends_on || []) {
        if (this.positions.has(dep)) paths.push(curve(this.positions.get(dep), at));
      }
      for (const child of this.children.get(id)) paths.push(curve(at, this.positions.get(child)));
    }
    this.highlight.setAttribute("d", paths.join(""));
  }

  /** Scrolls the container so that task `id` is in view. */
  reveal(id) {
    const p = this.positions.get(id);
    if (!p) return;
    this.container.scrollLeft = (p.x + NODE_W / 2) * this.scale - this.container.clientWidth / 2;
    this.container.scrollTop = (p.y + NODE_H / 2) * this.scale - this.container.clientHeight / 2;
  }

  zoom(scale) {
    this.scale = Math.max(0.05, Math.min(2, scale));
    this.plane.style.transform = `scale(${this.scale})`;
    this.sizer.style.width = `${Math.ceil(this.width * this.scale)}px`;
    this.sizer.style.height = `${Math.ceil(this.height * this.scale)}px`;
  }

  fit() {
    const box = this.container;
    this.zoom(Math.min(1, box.clientWidth / this.width, box.clientHeight / this.height));
  }

  picked(event, onSelect) {
    const node = event.target.closest("[data-task-id]");
    if (node) onSelect(node.dataset.taskId);
  }
}
