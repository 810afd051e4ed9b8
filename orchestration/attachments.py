"""A task's ``attachments``: each source becomes an :class:`~llm_abstractions.attachments.Attachment`.

A source is a path, an ``http(s)`` URL or a template that gives one. Paths are relative to the project file's
folder (a project built in Python: the working directory) and must stay inside it, ``..`` and symlinks resolved,
unless a folder the user allows (:class:`AttachmentRoots`: ``attachment_dirs=``, ``--attachment-dir``,
``ORCHESTRATE_ATTACHMENT_DIRS``) holds them. URLs are never fetched here: the provider fetches them.

A source known when the project is validated (no template syntax, or a template that reads only ``inputs``) is
read then: a missing file, a path outside the allowed folders or a type nothing takes is a validation issue, and
its bytes' digest is part of the task's fingerprint. A template that reads upstream outputs is rendered when the
task runs; its problems fail the task (``invalid_request``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_abstractions import BaseLlm
from llm_abstractions.attachments import Attachment, AttachmentError, is_url
from llm_abstractions.wrappers import WrapperLlm
from orchestration.templates import PromptTemplate

__all__ = [
    "ATTACHMENT_DIRS_ENV",
    "AttachmentRoots",
    "AttachmentSlot",
    "TaskAttachments",
    "load_attachment",
    "refused_attachments",
]

ATTACHMENT_DIRS_ENV = "ORCHESTRATE_ATTACHMENT_DIRS"
"""Folders (separated by ``os.pathsep``) the CLI lets attachments come from besides the project's."""


@dataclass(frozen=True)
class AttachmentRoots:
    """Where attachment paths start (:attr:`base`) and the folders they may resolve into."""

    base: Path
    """The project file's folder: relative paths start here."""
    allowed: tuple[Path, ...]
    """Resolved folders attachments may come from: :attr:`base` and those the user allowed."""

    @classmethod
    def of(cls, base: Path, extra: Sequence[Path] = ()) -> AttachmentRoots:
        """``base`` and the folders ``extra`` (relative ones from the working directory)."""
        base = base.resolve()
        return cls(base, tuple(dict.fromkeys([base, *(Path(folder).resolve() for folder in extra)])))

    def resolve(self, source: str) -> Path:
        """The file ``source`` names, symlinks resolved; raise :class:`AttachmentError` outside the allowed folders."""
        try:
            path = (self.base / Path(source).expanduser()).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop, a home folder that does not exist
            raise AttachmentError(f"cannot resolve {source}: {exc}") from None
        if not any(path.is_relative_to(folder) for folder in self.allowed):
            where = " or ".join(str(folder) for folder in self.allowed)
            raise AttachmentError(
                f"{source} is outside {where} (resolved to {path}): allow its folder with --attachment-dir"
                f" (or ${ATTACHMENT_DIRS_ENV}, or attachment_dirs= in Python)"
            )
        return path


def load_attachment(source: str, media_type: str | None, roots: AttachmentRoots) -> Attachment:
    """The attachment ``source`` names: a URL as it is, or a file inside ``roots``, read; raise
    :class:`AttachmentError`."""
    source = source.strip()
    if not source:
        raise AttachmentError("the attachment's source is empty")
    if is_url(source):
        return Attachment.from_url(source, media_type)
    path = roots.resolve(source)
    if not path.exists():
        raise AttachmentError(f"no such file: {source} (looked for {path})")
    return Attachment.from_path(path, media_type)


def refused_attachments(llm: BaseLlm, attachments: Sequence[Attachment], text_bytes: int = 0) -> list[str]:
    """What ``llm``'s provider (under its wrappers) would refuse in ``attachments`` sent in one request."""
    while isinstance(llm, WrapperLlm):
        llm = llm.wrapped
    return type(llm).attachment_problems(llm.config, attachments, text_bytes=text_bytes)


@dataclass(frozen=True, slots=True)
class AttachmentSlot:
    """One entry of a task's ``attachments``: its template, and the attachment when known at validation."""

    template: PromptTemplate
    media_type: str | None = None
    """The media type given in the file, if any."""
    attachment: Attachment | None = None
    """Read at validation; ``None``: rendered and read when the task runs."""


@dataclass(frozen=True)
class TaskAttachments:
    """A task's attachments: those read at validation, and templates rendered when it runs."""

    slots: tuple[AttachmentSlot, ...]
    roots: AttachmentRoots

    @property
    def dynamic(self) -> bool:
        """Whether some attachment is known only when the task runs (its template reads upstream outputs)."""
        return any(slot.attachment is None for slot in self.slots)

    @property
    def input_refs(self) -> frozenset[str]:
        """Inputs read by the templates rendered when the task runs."""
        return frozenset().union(*(slot.template.input_refs for slot in self.slots if slot.attachment is None))

    def render(
        self, inputs: Mapping[str, Any], tasks: Mapping[str, Any], variables: Mapping[str, Any] | None = None
    ) -> tuple[Attachment, ...]:
        """Every attachment, rendering and reading those known only now (``variables``: an instance's ``item`` and
        ``index``); raise ``TemplateError`` or :class:`AttachmentError` (its message names the entry, as
        ``attachments.N``)."""
        found: list[Attachment] = []
        for position, slot in enumerate(self.slots):
            if slot.attachment is not None:
                found.append(slot.attachment)
                continue
            source = slot.template.render(inputs, tasks, variables)
            try:
                found.append(load_attachment(source, slot.media_type, self.roots))
            except AttachmentError as exc:
                raise AttachmentError(f"attachments.{position}: {exc}") from None
        return tuple(found)

    def fingerprint(self) -> list[Any]:
        """What of the attachments shapes the answer: each known one's digest (or URL), each template's source."""
        return [
            [slot.attachment.name, slot.attachment.media_type, slot.attachment.sha256 or slot.attachment.url]
            if slot.attachment is not None
            else ["template", slot.template.source, slot.media_type]
            for slot in self.slots
        ]
