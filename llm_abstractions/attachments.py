"""Files and images sent with a prompt: :class:`Attachment`, and what a provider accepts (:class:`AttachmentLimits`).

An attachment is an image (PNG, JPEG, WebP, GIF), a PDF or a UTF-8 text file, given as its bytes or as an
``http(s)`` URL that the provider fetches (images and PDFs only: nothing here downloads anything). Its media type
comes from its magic bytes (images, PDF), else from its name's extension (a fixed table, then Python's built-in
one, never the machine's ``/etc/mime.types``), else from its content (UTF-8 without NUL bytes: ``text/plain``).

Text files are inlined into the prompt's text, before it, each between ``<attachment name=...>`` lines
(:func:`inline_text_attachments`): :class:`~llm_abstractions.BaseLlm` does it for every provider, which then
sees only images and PDFs in :attr:`Message.attachments <llm_abstractions.Message.attachments>`.

The bytes never leave an attachment except towards the provider: they are left out of its ``repr`` and of every
serialisation (``model_dump``, JSON), and so is a URL's query string (a signed URL's signature). What is stored,
logged or announced is its *reference* (:attr:`Attachment.reference`): name, media type, size, pages, SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import math
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_serializer

if TYPE_CHECKING:
    from os import PathLike

    from llm_abstractions.messages import Message

__all__ = [
    "ANY_ATTACHMENT",
    "IMAGE_TYPES",
    "MB",
    "PDF",
    "Attachment",
    "AttachmentError",
    "AttachmentLimits",
    "attachment_problems",
    "detect_media_type",
    "estimated_tokens",
    "inline_text_attachments",
    "inlined_text",
    "is_url",
]

MB = 1024 * 1024
"""A megabyte as the limits here count it (2**20 bytes)."""

PDF = "application/pdf"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
"""Image types an attachment may have."""

_TEXT_APPLICATION = frozenset(
    {
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-sh",
        "application/sql",
        "application/x-python",
        "application/x-tex",
    }
)
"""``application/*`` types that are text."""

_EXTENSIONS = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".conf": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".xml": "application/xml",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/x-ndjson",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".js": "application/javascript",
    ".ts": "text/x-typescript",
    ".py": "text/x-python",
    ".sh": "application/x-sh",
    ".sql": "application/sql",
    ".tex": "application/x-tex",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".pdf": PDF,
}
"""Media types by extension, looked up before Python's table (which lacks some and differs between versions)."""

_NAMES = {"image/png": "a PNG image", "image/jpeg": "a JPEG image", "image/webp": "a WebP image"}
_NAMES |= {"image/gif": "a GIF image", PDF: "a PDF"}

_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_BINARY = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f]")
"""Control characters that text files do not hold (tab, newlines, form feed and escape are allowed)."""


class AttachmentError(ValueError):
    """An attachment that cannot be used: unreadable, of a type nothing takes, not UTF-8 text, outside the
    folders it may come from. The message names the attachment, never its content."""


@cache
def _builtin_types() -> mimetypes.MimeTypes:
    """Python's own table of types, without the machine's files (the same answer everywhere)."""
    return mimetypes.MimeTypes(filenames=())


def _sniffed(data: bytes) -> str | None:
    """The media type the magic bytes say: PNG, JPEG, GIF, WebP or PDF; ``None`` for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return PDF
    return None


def _is_text_type(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in _TEXT_APPLICATION or media_type.endswith(("+json", "+xml"))


def _guessed(name: str) -> str | None:
    """The media type of ``name``'s extension."""
    suffix = PurePosixPath(name).suffix.lower()
    if not suffix:
        return None
    return _EXTENSIONS.get(suffix) or _builtin_types().guess_type(f"x{suffix}")[0]


def _text_of(data: bytes) -> str | None:
    """``data`` as UTF-8 text (a byte-order mark dropped); ``None`` if it is not, or holds control characters
    that only binary files hold (NUL...)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return None if _BINARY.search(text) else text


def _supported() -> str:
    return "PNG, JPEG, WebP or GIF images, PDFs, and UTF-8 text files"


def _supported_urls() -> str:
    return "PNG, JPEG, WebP or GIF images and PDFs"


def detect_media_type(data: bytes, name: str, declared: str | None = None) -> str:
    """The media type of ``data`` named ``name``: the magic bytes, else ``declared``, else the extension, else
    ``text/plain`` for UTF-8 text. Raise :class:`AttachmentError` for a type nothing takes, bytes that are not
    what ``declared`` or the extension says, or text that is not UTF-8."""
    sniffed = _sniffed(data)
    wanted = declared.split(";")[0].strip().lower() if declared else None
    if wanted is not None and wanted in _NAMES and sniffed != wanted:
        what = f"it looks like {_NAMES[sniffed]}" if sniffed else "its first bytes are not that format's signature"
        raise AttachmentError(f"{name} is declared {wanted}, but {what}")
    if sniffed is not None:
        return sniffed
    media_type = wanted or _guessed(name)
    if media_type in _NAMES:
        raise AttachmentError(f"{name} does not look like {_NAMES[media_type]} (its first bytes are not its signature)")
    if media_type is not None and not _is_text_type(media_type):
        raise AttachmentError(f"{name} is {media_type}: attachments are {_supported()}")
    if _text_of(data) is None:
        what = f"{media_type}, but it is not UTF-8 text" if media_type else "neither an image, a PDF nor UTF-8 text"
        raise AttachmentError(f"{name} is {what}: attachments are {_supported()}")
    return media_type or "text/plain"


def _pdf_pages(data: bytes) -> int | None:
    """Pages of a PDF, counted from its ``/Type /Page`` objects; ``None`` when it hides them (object streams)."""
    return len(_PAGE.findall(data)) or None


def is_url(source: str) -> bool:
    """Whether ``source`` is an ``http(s)`` URL (anything else is a path)."""
    return source[:8].lower().startswith(("http://", "https://"))


def _public_url(url: str) -> str:
    """``url`` without user and password, query string and fragment (where signed URLs keep their credentials)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _size(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB // 10 else f"{size:,} bytes"


class Attachment(BaseModel):
    """A file or image sent with a prompt: its bytes, or a URL the provider fetches.

    Build one with :meth:`from_path`, :meth:`from_bytes` or :meth:`from_url`. Serialised (and in its
    ``repr``) it is its reference: the bytes and a URL's query string are left out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    """The file's name (for a URL, the last segment of its path)."""
    media_type: str
    """``image/png``, ``image/jpeg``, ``image/webp``, ``image/gif``, ``application/pdf``, or a text type."""
    size: int | None = None
    """Bytes; ``None`` for a URL."""
    sha256: str | None = None
    """Hex SHA-256 digest of the bytes; ``None`` for a URL."""
    pages: int | None = None
    """A PDF's pages, where they can be counted without parsing it (``None``: unknown)."""
    url: str | None = Field(default=None, repr=False)
    """Where the provider fetches it; ``None``: the bytes are sent. Serialised without its query string."""
    data: bytes | None = Field(default=None, exclude=True, repr=False)
    """The bytes (``None`` for a URL, and in a reference); never serialised."""

    @field_serializer("url")
    def _serialised_url(self, url: str | None) -> str | None:
        return None if url is None else _public_url(url)

    @classmethod
    def from_bytes(cls, data: bytes, name: str, media_type: str | None = None) -> Attachment:
        """An attachment of ``data``; its media type found as :func:`detect_media_type` says."""
        found = detect_media_type(data, name, media_type)
        pages = _pdf_pages(data) if found == PDF else None
        digest = hashlib.sha256(data).hexdigest()
        return cls(name=name, media_type=found, size=len(data), sha256=digest, pages=pages, data=data)

    @classmethod
    def from_path(
        cls, path: str | PathLike[str], media_type: str | None = None, *, name: str | None = None
    ) -> Attachment:
        """The file at ``path`` (named ``name``, by default its file name); raise :class:`AttachmentError`."""
        file = Path(path)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise AttachmentError(f"no such file: {file}") from None
        except IsADirectoryError:
            raise AttachmentError(f"{file} is a folder, not a file") from None
        except OSError as exc:
            raise AttachmentError(f"cannot read {file}: {exc.strerror or type(exc).__name__}") from None
        return cls.from_bytes(data, name or file.name, media_type)

    @classmethod
    def from_url(cls, url: str, media_type: str | None = None) -> Attachment:
        """An image or PDF the provider fetches from ``url``: its type is ``media_type``, else its path's extension."""
        if not is_url(url):
            raise AttachmentError(f"{url} is not an http(s) URL")
        path = PurePosixPath(urlsplit(url).path)
        name = path.name or urlsplit(url).netloc
        found = media_type.split(";")[0].strip().lower() if media_type else _guessed(path.name)
        if found is None:
            raise AttachmentError(f"cannot tell the media type of {_public_url(url)}: give its media_type")
        if found not in _NAMES:
            raise AttachmentError(f"{_public_url(url)} is {found}: only {_supported_urls()} can be sent by URL")
        return cls(name=name, media_type=found, url=url)

    @property
    def kind(self) -> Literal["image", "pdf", "text"]:
        """What the attachment is: an ``image``, a ``pdf`` or ``text`` (inlined into the prompt)."""
        if self.media_type in IMAGE_TYPES:
            return "image"
        return "pdf" if self.media_type == PDF else "text"

    @property
    def reference(self) -> Attachment:
        """This attachment without its bytes (and a URL without its query string): what may be stored or shown."""
        if self.data is None and (self.url is None or self.url == _public_url(self.url)):
            return self
        return self.model_copy(update={"data": None, "url": None if self.url is None else _public_url(self.url)})

    @property
    def label(self) -> str:
        """Name, type, size and digest, for messages and displays: ``a.png (image/png, 68 bytes, sha256 1a2b...)``."""
        if self.url is not None:
            return f"{self.name} ({self.media_type}, by URL {_public_url(self.url)})"
        details = [self.media_type]
        if self.size is not None:
            details.append(_size(self.size))
        if self.pages is not None:
            details.append(f"{self.pages} page{'s' if self.pages != 1 else ''}")
        if self.sha256 is not None:
            details.append(f"sha256 {self.sha256[:12]}")
        return f"{self.name} ({', '.join(details)})"

    @property
    def text(self) -> str:
        """The content of a text attachment."""
        text = _text_of(self.raw())
        if text is None:
            raise AttachmentError(f"{self.name} is not UTF-8 text")
        return text

    def base64(self) -> str:
        """The bytes in base64, as the providers' JSON carries them."""
        return base64.b64encode(self.raw()).decode("ascii")

    def data_url(self) -> str:
        """A ``data:`` URL of the bytes (OpenAI's image and file parts)."""
        return f"data:{self.media_type};base64,{self.base64()}"

    @property
    def encoded_size(self) -> int:
        """Bytes the attachment adds to a request: base64 of an image or PDF, the text of a text file, 0 for a URL."""
        if self.url is not None or self.size is None:
            return 0
        return self.size if self.kind == "text" else 4 * math.ceil(self.size / 3)

    def raw(self) -> bytes:
        """The bytes; raise :class:`AttachmentError` for a URL or a reference, which have none."""
        if self.data is None:
            raise AttachmentError(f"{self.name}: the attachment's bytes are not here (a URL, or a stored reference)")
        return self.data


def inline_text_attachments(messages: Sequence[Message]) -> list[Message]:
    """``messages`` with each text attachment written into its message's text, before it, between lines naming it
    (``<attachment name="notes.md" media_type="text/markdown">`` ... ``</attachment>``); images and PDFs stay."""
    inlined: list[Message] = []
    for message in messages:
        texts = [a for a in message.attachments if a.kind == "text"]
        if not texts:
            inlined.append(message)
            continue
        blocks = [inlined_text(a) for a in texts]
        content = "\n\n".join([*blocks, message.content] if message.content else blocks)
        others = tuple(a for a in message.attachments if a.kind != "text")
        inlined.append(message.model_copy(update={"content": content, "attachments": others}))
    return inlined


def inlined_text(attachment: Attachment) -> str:
    """A text attachment as :func:`inline_text_attachments` writes it into the prompt."""
    head = f'<attachment name="{attachment.name}" media_type="{attachment.media_type}">'
    return f"{head}\n{attachment.text.rstrip()}\n</attachment>"


def estimated_tokens(attachment: Attachment) -> int:
    """A rough count of the prompt tokens ``attachment`` costs: a text file's characters / 4, 1,600 per image
    (about what a large image costs at OpenAI and Anthropic), 1,500 per PDF page (its counted pages, else one
    per 50 kB)."""
    if attachment.kind == "image":
        return 1600
    size = attachment.size or 0
    if attachment.kind == "text":
        return size // 4
    return 1500 * (attachment.pages or max(1, size // 50_000))


@dataclass(frozen=True)
class AttachmentLimits:
    """What a provider takes besides text files (which every provider takes, inlined into the prompt).

    Sizes are checked before any call, on the raw bytes unless :attr:`image_limit_encoded`; the request's size
    counts its text and every attachment as sent (base64 for images and PDFs, nothing for a URL).
    """

    media_types: frozenset[str]
    """Image and PDF types sent as the provider's own parts."""
    url_media_types: frozenset[str] = frozenset()
    """Types the provider fetches by URL (empty: no URLs)."""
    max_image_bytes: int | None = None
    """The largest image."""
    image_limit_encoded: bool = False
    """Whether :attr:`max_image_bytes` applies to the image's base64 text (Anthropic's does)."""
    max_pdf_bytes: int | None = None
    """The largest PDF."""
    max_images: int | None = None
    """Images in one request."""
    max_pdf_pages: int | None = None
    """PDF pages in one request (counted where they can be; see :attr:`Attachment.pages`)."""
    max_request_bytes: int | None = None
    """The whole request: its text and its attachments as sent."""


ANY_ATTACHMENT = AttachmentLimits(media_types=IMAGE_TYPES | {PDF}, url_media_types=IMAGE_TYPES | {PDF})
"""Every type, by bytes or URL, with no size limit (in-process models: ``offline``, ``FunctionLlm``)."""


def _listed(types: frozenset[str]) -> str:
    return ", ".join(sorted(types)) or "none"


def attachment_problems(
    limits: AttachmentLimits | None, provider: str, attachments: Sequence[Attachment], *, text_bytes: int = 0
) -> list[str]:
    """Why ``provider`` (taking ``limits``; ``None``: text files only) would refuse ``attachments`` in one
    request whose text is ``text_bytes`` long (``0``: not known yet)."""
    missing = [
        f"{a.name}: its bytes are not here (a stored reference)"
        for a in attachments
        if a.data is None and a.url is None
    ]
    missing += [
        f"{a.name}: a text file cannot be sent by URL" for a in attachments if a.kind == "text" and a.url is not None
    ]
    binary = [a for a in attachments if a.kind != "text"]
    if missing or not binary:
        return missing
    if limits is None:
        names = ", ".join(a.name for a in binary)
        return [f"{provider} takes no images or PDFs (text files only, inlined into the prompt): {names}"]
    found: list[str] = []
    for a in binary:
        if a.media_type not in limits.media_types:
            found.append(f"{provider} does not take {a.media_type} ({a.name}); it takes {_listed(limits.media_types)}")
        elif a.url is not None and a.media_type not in limits.url_media_types:
            how = f"only {_listed(limits.url_media_types)}" if limits.url_media_types else "no URLs"
            found.append(f"{provider} cannot fetch {a.media_type} by URL ({a.name}; it fetches {how}): attach the file")
        elif a.url is None and a.size is not None:
            found += _size_problems(limits, provider, a)
    images = sum(1 for a in binary if a.kind == "image")
    if limits.max_images is not None and images > limits.max_images:
        found.append(f"{images} images in one request; {provider} takes at most {limits.max_images}")
    pages = sum(a.pages or 0 for a in binary if a.kind == "pdf")
    if limits.max_pdf_pages is not None and pages > limits.max_pdf_pages:
        found.append(f"{pages} PDF pages in one request; {provider} takes at most {limits.max_pdf_pages}")
    total = text_bytes + sum(a.encoded_size for a in attachments)
    if limits.max_request_bytes is not None and total > limits.max_request_bytes:
        what = "the request's text and attachments" if text_bytes else "the attachments"
        found.append(
            f"{what} come to {_size(total)} as sent; {provider} takes {_size(limits.max_request_bytes)} at most"
        )
    return found


def _size_problems(limits: AttachmentLimits, provider: str, a: Attachment) -> list[str]:
    size = a.size or 0
    if a.kind == "image" and limits.max_image_bytes is not None:
        measured = a.encoded_size if limits.image_limit_encoded else size
        if measured > limits.max_image_bytes:
            how = " base64-encoded" if limits.image_limit_encoded else ""
            return [
                f"{a.name} is {_size(measured)}{how}; {provider} takes images up to {_size(limits.max_image_bytes)}"
            ]
    if a.kind == "pdf" and limits.max_pdf_bytes is not None and size > limits.max_pdf_bytes:
        return [f"{a.name} is {_size(size)}; {provider} takes PDFs up to {_size(limits.max_pdf_bytes)}"]
    return []
