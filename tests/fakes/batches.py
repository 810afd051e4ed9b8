"""The batch endpoints of the fake provider server: OpenAI (files and ``/v1/batches``), Anthropic
(``/v1/messages/batches``) and Gemini (``models/{model}:batchGenerateContent`` with inline requests, ``batches/{id}``),
driven by the real SDKs.

A job is answered in progress for its first ``polls_before_done`` status reads (or, with ``hold``, until
:meth:`FakeBatches.release`), then ends: each request is answered as the real-time endpoint would (an echo), or with
the :class:`~tests.fakes.scripted.Fault` scripted for its custom id in :attr:`FakeBatches.faults`. With ``expire_after``
set, a job expires having answered only that many of its requests; a cancelled job answers none. Every job is counted
(:attr:`FakeBatches.jobs`); batch traffic is not in the server's request log.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from tests.fakes.scripted import Api, Fault, RecordedRequest, Reply
from tests.fakes.wire_formats import error_body, render_complete

__all__ = ["FakeBatches", "FakeJob"]


@dataclass
class FakeJob:
    """One job the server accepted."""

    id: str
    api: Api
    requests: list[tuple[str, dict[str, Any]]]
    """Each request's custom id and body, in the order they came."""
    metadata: dict[str, str]
    created_at: int
    polls: int = 0
    state: str = "in_progress"
    """``in_progress``, ``ended``, ``expired`` or ``cancelled``."""
    ended_at: int | None = None
    answered: list[str] = field(default_factory=list)
    """Custom ids with an answer once the job is final."""


class FakeBatches:
    """The batch jobs of one fake server; set the knobs before the jobs are polled."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.faults: dict[str, Fault] = {}
        """Per-request failures, by custom id."""
        self.polls_before_done = 1
        self.hold = False
        """Keep every job in progress until :meth:`release`."""
        self.expire_after: int | None = None
        self.max_requests: int | None = None
        self.max_bytes: int | None = None
        """A job with more requests, or a larger input (OpenAI: its file; the others: the request), is refused (400),
        as the providers refuse one over their limits."""
        self.ack_delay_s = 0.0
        """How long the answer to a job's creation is held back (the job exists at once): a client killed meanwhile
        never learns its id."""
        self.refused = 0
        """Jobs refused for their size."""
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Condition()

    # -- for tests ----------------------------------------------------------------------------

    def release(self) -> None:
        """End every held job now (as if it finished while nobody polled it)."""
        with self._lock:
            self.hold = False
            for job in self.jobs.values():
                job.polls = max(job.polls, self.polls_before_done + 1)
                self._advance(job)

    def wait_for_jobs(self, count: int, timeout: float = 10.0) -> list[FakeJob]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.jobs) >= count, timeout):
                raise TimeoutError(f"{len(self.jobs)} of {count} batch jobs arrived within {timeout} s")
            return list(self.jobs.values())

    def lines(self) -> list[str]:
        """The custom ids of every request of every job."""
        with self._lock:
            return [custom_id for job in self.jobs.values() for custom_id, _ in job.requests]

    # -- routing ------------------------------------------------------------------------------

    def delay_of(self, method: str, path: str) -> float:
        """How long to hold back the answer to this request."""
        creates = method == "POST" and (
            path.rstrip("/") in ("/v1/batches", "/v1/messages/batches") or path.endswith(":batchGenerateContent")
        )
        return self.ack_delay_s if creates else 0.0

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes] | None:
        """The status and body of a batch request; ``None``: not one."""
        parts = path.strip("/").split("/")
        with self._lock:
            if "x-goog-api-key" in headers:  # google-genai: its paths overlap OpenAI's (``/v1/batches``)
                if len(parts) >= 2 and (parts[1] == "batches" or ":batchGenerateContent" in path):
                    return self._gemini_batches(method, parts[1:], raw)
                return None
            if parts[:2] == ["v1", "files"]:
                return self._openai_files(method, parts[2:], headers, raw)
            if parts[:2] == ["v1", "batches"]:
                return self._openai_batches(method, parts[2:], raw)
            if parts[:3] == ["v1", "messages", "batches"]:
                return self._anthropic_batches(method, parts[3:], raw)
        return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _advance(self, job: FakeJob, *, read: bool = False) -> None:
        """A job past its in-progress status reads (``read``: one more) ends, or expires."""
        if job.state != "in_progress":
            return
        job.polls += read
        if self.hold or job.polls <= self.polls_before_done:
            return
        ids = [custom_id for custom_id, _ in job.requests]
        if self.expire_after is not None:
            job.state, job.answered = "expired", ids[: self.expire_after]
        else:
            job.state, job.answered = "ended", ids
        job.ended_at = int(time.time())

    def _too_large(self, api: Api, requests: list[Any], size: int) -> tuple[int, bytes] | None:
        """The provider's refusal of a job over the limits; ``None``: within them."""
        if (self.max_requests is not None and len(requests) > self.max_requests) or (
            self.max_bytes is not None and size > self.max_bytes
        ):
            self.refused += 1
            fault = Fault.bad_request(f"the batch of {len(requests)} requests ({size} bytes) is over the limits")
            return fault.status, _json(error_body(api, fault))
        return None

    def _submitted(self, api: Api, requests: list[tuple[str, dict[str, Any]]], metadata: dict[str, str]) -> FakeJob:
        prefix = {"openai": "batch_", "anthropic": "msgbatch_", "gemini": "batches/fake"}[api]
        job = FakeJob(self._new_id(prefix), api, requests, metadata, int(time.time()))
        self.jobs[job.id] = job
        self._lock.notify_all()
        return job

    def _answer(self, job: FakeJob, custom_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fault = self.faults.get(custom_id)
        if fault is not None:
            return fault.status, error_body(job.api, fault)
        request = RecordedRequest(
            api=job.api,
            method="POST",
            path="",
            query={},
            headers={},
            raw_body=b"",
            body=body,
            model=str(body.get("model")),
            stream=False,
            received_at=time.monotonic(),
        )
        return 200, render_complete(request, Reply())

    # -- OpenAI ---------------------------------------------------------------------------------

    def _openai_files(self, method: str, rest: list[str], headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        if method == "POST" and not rest:
            head = f"Content-Type: {headers['content-type']}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(head + raw)
            content = next(
                part.get_payload(decode=True)
                for part in message.iter_parts()
                if part.get_param("name", header="content-disposition") == "file"
            )
            assert isinstance(content, bytes)
            file_id = self._new_id("file-")
            self._files[file_id] = content
            return 200, _json(_file(file_id, len(content)))
        if method == "GET" and len(rest) == 2 and rest[1] == "content" and rest[0] in self._files:
            return 200, self._files[rest[0]]
        return 404, _json({"error": {"message": "no such file", "type": "invalid_request_error"}})

    def _openai_batches(self, method: str, rest: list[str], raw: bytes) -> tuple[int, bytes]:
        if method == "POST" and not rest:
            body = json.loads(raw)
            content = self._files[body["input_file_id"]]
            lines = [json.loads(line) for line in content.decode().splitlines() if line]
            if (refused := self._too_large("openai", lines, len(content))) is not None:
                return refused
            created = self._submitted("openai", [(line["custom_id"], line["body"]) for line in lines], body["metadata"])
            return 200, _json(self._openai_batch(created))
        if method == "GET" and not rest:
            data = [self._openai_batch(job) for job in reversed(self.jobs.values())]
            return 200, _json({"object": "list", "data": data, "has_more": False})
        job = self.jobs.get(rest[0]) if rest else None
        if job is None:
            return 404, _json({"error": {"message": "no such batch", "type": "invalid_request_error"}})
        if method == "POST" and rest[1:] == ["cancel"]:
            if job.state == "in_progress":
                job.state, job.ended_at = "cancelled", int(time.time())
            return 200, _json(self._openai_batch(job))
        self._advance(job, read=True)
        return 200, _json(self._openai_batch(job))

    def _openai_batch(self, job: FakeJob) -> dict[str, Any]:
        status = {"in_progress": "in_progress", "ended": "completed"}.get(job.state, job.state)
        batch: dict[str, Any] = {
            "id": job.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-input",
            "completion_window": "24h",
            "status": status,
            "created_at": job.created_at,
            "metadata": job.metadata,
        }
        if job.state == "in_progress":
            batch["request_counts"] = {"total": len(job.requests), "completed": 0, "failed": 0}
            return batch
        bodies = dict(job.requests)
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        failed = 0
        for custom_id, _body in job.requests:
            if custom_id not in job.answered:
                code = "batch_expired" if job.state == "expired" else "batch_cancelled"
                message = "This request could not be executed before the completion window expired."
                errors.append(
                    {
                        "id": custom_id,
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": code, "message": message},
                    }
                )
                continue
            status_code, answer = self._answer(job, custom_id, bodies[custom_id])
            line = {
                "id": f"req_{custom_id}",
                "custom_id": custom_id,
                "response": {"status_code": status_code, "request_id": custom_id, "body": answer},
                "error": None,
            }
            if status_code == 200:
                output.append(line)
            else:
                failed += 1
                errors.append(line)
        for key, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                file_id = f"{key}-{job.id}"
                self._files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
                batch[key] = file_id
        batch["request_counts"] = {"total": len(job.requests), "completed": len(output), "failed": failed}
        return batch

    # -- Gemini -------------------------------------------------------------------------------------

    def _gemini_batches(self, method: str, rest: list[str], raw: bytes) -> tuple[int, bytes]:
        """``rest``: the path after the version (``models/m:batchGenerateContent``, ``batches``, ``batches/id``)."""
        if method == "POST" and rest[-1].endswith(":batchGenerateContent"):
            batch = json.loads(raw)["batch"]
            model = rest[-1].split(":")[0]  # the answers name it, as generateContent's do
            requests = [
                (r["metadata"]["custom_id"], {"model": model, **r["request"]})
                for r in batch["inputConfig"]["requests"]["requests"]
            ]
            if (refused := self._too_large("gemini", requests, len(raw))) is not None:
                return refused
            created = self._submitted("gemini", requests, {"displayName": batch.get("displayName", "")})
            return 200, _json(self._gemini_batch(created))
        if method == "GET" and rest == ["batches"]:
            return 200, _json({"operations": [self._gemini_batch(job) for job in reversed(self.jobs.values())]})
        name = "/".join(rest[:2]).split(":")[0]
        job = self.jobs.get(name)
        if job is None:
            return 404, _json({"error": {"code": 404, "message": "no such batch", "status": "NOT_FOUND"}})
        if method == "POST" and rest[-1].endswith(":cancel"):
            if job.state == "in_progress":
                job.state, job.ended_at = "cancelled", int(time.time())
            return 200, _json({})
        self._advance(job, read=True)
        return 200, _json(self._gemini_batch(job))

    def _gemini_batch(self, job: FakeJob) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": "models/gemini-fake",
            "displayName": job.metadata.get("displayName"),
            "state": _gemini_state(job),
            "createTime": _iso(job.created_at),
        }
        if job.state != "in_progress":
            answers = []
            for custom_id, body in job.requests:
                if custom_id not in job.answered:
                    continue
                status, answer = self._answer(job, custom_id, body)
                if status == 200:
                    answers.append({"response": answer, "metadata": {"custom_id": custom_id}})
                else:
                    error = {"code": _RPC_OF_HTTP.get(status, 2), "message": answer["error"]["message"]}
                    answers.append({"error": error, "metadata": {"custom_id": custom_id}})
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": answers}}
            metadata["endTime"] = _iso(job.ended_at or job.created_at)
        return {"name": job.id, "metadata": metadata, "done": job.state != "in_progress"}

    # -- Anthropic -------------------------------------------------------------------------------

    def _anthropic_batches(self, method: str, rest: list[str], raw: bytes) -> tuple[int, bytes]:
        if method == "POST" and not rest:
            requests = [(r["custom_id"], r["params"]) for r in json.loads(raw)["requests"]]
            if (refused := self._too_large("anthropic", requests, len(raw))) is not None:
                return refused
            created = self._submitted("anthropic", requests, {})
            return 200, _json(self._anthropic_batch(created))
        job = self.jobs.get(rest[0]) if rest else None
        if job is None:
            return 404, _json({"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}})
        if method == "POST" and rest[1:] == ["cancel"]:
            if job.state == "in_progress":
                job.state, job.ended_at = "cancelled", int(time.time())
            return 200, _json(self._anthropic_batch(job))
        if rest[1:] == ["results"]:
            return 200, "".join(json.dumps(line) + "\n" for line in self._anthropic_results(job)).encode()
        self._advance(job, read=True)
        return 200, _json(self._anthropic_batch(job))

    def _anthropic_results(self, job: FakeJob) -> list[dict[str, Any]]:
        lines = []
        for custom_id, body in job.requests:
            if custom_id not in job.answered:
                result: dict[str, Any] = {"type": "expired" if job.state == "expired" else "canceled"}
            else:
                status, answer = self._answer(job, custom_id, body)
                result = (
                    {"type": "succeeded", "message": answer} if status == 200 else {"type": "errored", "error": answer}
                )
            lines.append({"custom_id": custom_id, "result": result})
        return lines

    def _anthropic_batch(self, job: FakeJob) -> dict[str, Any]:
        total = len(job.requests)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if job.state == "in_progress":
            counts["processing"] = total
        else:
            for line in self._anthropic_results(job):
                kind = line["result"]["type"]
                counts[kind] += 1
        stamp = _iso(job.created_at)
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": "in_progress" if job.state == "in_progress" else "ended",
            "request_counts": counts,
            "created_at": stamp,
            "expires_at": _iso(job.created_at + 86400),
            "ended_at": _iso(job.ended_at) if job.ended_at else None,
            "cancel_initiated_at": stamp if job.state == "cancelled" else None,
            "archived_at": None,
            "results_url": f"/v1/messages/batches/{job.id}/results" if job.state != "in_progress" else None,
        }


_RPC_OF_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 503: 14, 504: 4}


def _gemini_state(job: FakeJob) -> str:
    return {"in_progress": "BATCH_STATE_RUNNING", "ended": "BATCH_STATE_SUCCEEDED"}.get(
        job.state, f"BATCH_STATE_{job.state.upper()}"
    )


def _file(file_id: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": "batch.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


def _iso(stamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
