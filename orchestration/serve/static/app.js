// The page of `orchestrate serve`: the token, the views by address (#/, #/runs/ID, #/reviews, #/new), and a poll
// every few seconds for the runs list, the review queue and the count of open reviews. (A run's own page follows
// its event stream. The stream of every run, /api/events, starts at the store's first event, so on a store with
// a long history it would replay all of it at every page load: polling is the cheaper way to a live list.)

import { api, setToken, takeToken, whenUnauthorized } from "./api.js";
import { throttle } from "./dom.js";
import { reviewsView } from "./reviews.js";
import { runView } from "./run.js";
import { newRunView, runsView } from "./runs.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");
const reviewCount = document.getElementById("review-count");
const dialog = document.getElementById("token-dialog");
const POLL_MS = 3000;
let view = null;

function route() {
  if (/token=/.test(location.hash)) takeToken(); // an address with a token, opened in this tab again
  view?.close();
  const path = location.hash.replace(/^#/, "") || "/";
  const run = path.match(/^\/runs\/([^/]+)$/);
  const onChange = refreshReviewCount;
  if (run) view = runView(main, decodeURIComponent(run[1]), { onChange });
  else if (path === "/reviews") view = reviewsView(main, { onChange });
  else if (path === "/new") view = newRunView(main);
  else view = runsView(main);
  const section = run ? "/" : path;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === `#${section}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  main.focus({ preventScroll: true });
}

const refreshReviewCount = throttle(async () => {
  try {
    const { reviews } = await api("/api/reviews");
    reviewCount.textContent = reviews.length ? String(reviews.length) : "";
    reviewCount.hidden = !reviews.length;
    showConnection("live", "connected");
  } catch (error) {
    showConnection("down", error.status ? `error ${error.status}` : "server unreachable");
  }
}, 300);

function showConnection(state, text) {
  connection.dataset.state = state;
  if (connection.textContent !== text) connection.textContent = text; // announced only when it changes
}

/** Every few seconds while the page is seen: the view's data (if it polls) and the review count. */
function poll() {
  if (document.hidden) return;
  view?.refresh?.();
  refreshReviewCount();
}

function askForToken() {
  if (!dialog.open) dialog.showModal();
}

dialog.querySelector("form").addEventListener("submit", () => {
  const value = dialog.querySelector("input").value.trim();
  if (!value) return;
  setToken(value);
  start();
});

let polling = null;

function start() {
  route();
  refreshReviewCount();
  polling ??= setInterval(poll, POLL_MS);
}

whenUnauthorized(askForToken);
window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", poll);
if (takeToken()) start();
else askForToken();
