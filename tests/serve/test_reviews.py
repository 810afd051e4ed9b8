"""Review decisions over HTTP, with the store's rules: a stale digest and a conflicting decision are 409, an unknown
gate 404, an invalid edit 422, the same decision id again a no-op."""

from __future__ import annotations

import json

from tests.serve.conftest import GATED, Served, events, project, run_of, start, wait_for_run, wait_for_status


def test_decisions_over_http(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("reviewed", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        review = f"/api/runs/{run_id}/tasks/gated/review"

        (gate,) = client.get("/api/reviews").json()["reviews"]
        assert gate["run_id"] == run_id and gate["task_id"] == "gated" and gate["stage"] == "after"
        assert gate["payload"]["output"] == "check me" and "decision" not in gate
        assert client.get("/api/reviews", params={"run_id": run_id}).json()["reviews"] == [gate]
        assert client.get("/api/reviews", params={"run_id": "nope"}).status_code == 404
        assert client.get(f"/api/runs/{run_id}/tasks/gated").json()["gate"] == gate

        stale = client.post(review, json={"decision": "approve", "digest": "0" * 64})
        assert stale.status_code == 409 and "changed" in stale.json()["detail"]
        assert client.post(f"/api/runs/{run_id}/tasks/a/review", json={"decision": "approve"}).status_code == 404
        assert client.post("/api/runs/nope/tasks/gated/review", json={"decision": "approve"}).status_code == 404
        invalid = client.post(review, json={"decision": "edit", "prompt": "an answer gate has no prompt"})
        assert invalid.status_code == 422 and "output" in invalid.json()["issues"][0]["message"]
        assert client.post(review, json={"decision": "reject"}).status_code == 422  # a rejection needs a reason
        assert client.post(review, json={"decision": "approve", "output": "x"}).status_code == 422
        assert client.post(review, json={"decision": "maybe"}).status_code == 422

        body = {"decision": "edit", "output": "edited answer", "actor": "alice", "digest": gate["digest"]}
        edited = client.post(review, json={**body, "decision_id": "d-1"})
        assert edited.status_code == 200, edited.text
        decided = edited.json()
        assert decided["recorded"] is True and decided["gate"]["decision"] == "edit"
        assert decided["gate"]["actor"] == "alice" and decided["gate"]["decided_at"]
        again = client.post(review, json={**body, "decision_id": "d-1"})
        assert again.status_code == 200 and again.json()["recorded"] is False
        conflict = client.post(review, json={"decision": "reject", "message": "no", "decision_id": "d-2"})
        assert conflict.status_code == 409 and "already decided" in conflict.json()["detail"]

        wait_for_run(client, run_id, "success")
        task = client.get(f"/api/runs/{run_id}/tasks/gated").json()
        assert task["output"] == "edited answer" and task["review"]["decision"] == "edit" and task["gate"] is None
        assert client.get("/api/reviews").json() == {"reviews": []}
        assert run_of(client, run_id)["open_reviews"] == 0
        stream = events(client, f"/api/runs/{run_id}/events")
        requested = json.loads(next(e.data for e in stream if e.event == "review_requested"))
        assert requested["status"] == "waiting" and requested["gate"]["digest"] == gate["digest"]
        assert "payload" not in requested["gate"]  # events stay small: the payload is read from the gate
        decided_event = json.loads(next(e.data for e in stream if e.event == "review_decided"))
        assert decided_event["gate"]["decision"] == "edit" and decided_event["gate"]["actor"] == "alice"
