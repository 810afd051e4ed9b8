"""Budgets that are never exceeded: every model call reserves its worst case first, and settles after.

A run's caps (``defaults.budget``, ``--budget-usd``) and each agent's (``agents.<name>.budget``) are accounts of
one :class:`BudgetLedger`. Before a call, :class:`BudgetedLlm` reserves the call's worst case in the run's account
and its agent's: input tokens (counted with the model's tokenizer, else bounded by the prompt's UTF-8 bytes) plus
``max_tokens`` of output, priced with genai-prices (the input at the prompt-cache write price where that is higher:
Claude's). The reservation is committed to the run store before the call
is sent, and settled to the call's actual usage and cost after it (a failed call to what the provider reported it
billed; a call cut short by cancellation keeps its reservation, as it may have been billed). So the actual spend
never goes above a cap, however many calls are in flight, and a crash loses none of it: a resumed run starts from
what the store says was spent (unsettled reservations counted whole).

The agents file's ``budgets: {project_daily_usd: X}`` caps what every run of the project (by name) spends in a UTC
day together, across processes: its reservations are checked against the store's ``spend`` rows of that project
and day and written in the same ``BEGIN IMMEDIATE`` transaction (:meth:`RunStore.reserve_daily_spend`), so two
runs at once cannot both take the last room. Without a store it does not apply.

A call whose reservation does not fit waits while other calls' reservations (of this run) are outstanding (they may
free room); reservations of other runs are counted whole until they settle, and not waited for;
otherwise it is not made: :class:`~llm_abstractions.BudgetExhaustedError` (``budget_exhausted``, not retried).
Crossing ``warn_at`` of a cap, and the first refusal, are announced once each (``on_event``). Cache hits make no
call and spend nothing; retries and repair calls are calls like any other.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from agent_registry import BudgetLimits
from llm_abstractions import BaseLlm, BudgetExhaustedError, GenerationOptions, LlmError, LlmResponse, Message, Usage
from llm_abstractions.attachments import Attachment
from llm_abstractions.pricing import cost_usd
from llm_abstractions.tokens import count_input_tokens
from llm_abstractions.wrappers.wrapper import WrapperLlm
from orchestration.issues import ValidationIssue

if TYPE_CHECKING:
    from orchestration.models import ProjectBudget
    from orchestration.project import Project
    from orchestration.store import RunStore

__all__ = ["BudgetLedger", "BudgetStatus", "BudgetedLlm", "attachment_tokens", "budget_issues"]

RUN = ""
"""The run's account (agents have theirs under their names)."""
DAILY = "project_daily"
"""How events name the project's daily account."""


@dataclass(frozen=True)
class BudgetStatus:
    """An account's state when an event is announced."""

    account: str
    """``run``, or the agent's name."""
    spent_usd: float
    spent_tokens: int
    cap_usd: float | None
    cap_tokens: int | None
    exhausted: bool


@dataclass(eq=False)  # compared by identity
class _Account:
    caps: BudgetLimits
    spent_usd: float = 0.0
    spent_tokens: int = 0
    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    outstanding: int = 0
    """Reservations not settled yet (a count: float sums do not come back to exactly 0)."""
    warned: bool = False
    refused: bool = False

    def fits(self, usd: float, tokens: int) -> bool:
        """Whether a reservation fits the caps (the daily account's is decided in the store)."""
        caps = self.caps
        if caps.max_cost_usd is not None and self.spent_usd + self.reserved_usd + usd > caps.max_cost_usd + 1e-12:
            return False
        return caps.max_tokens is None or self.spent_tokens + self.reserved_tokens + tokens <= caps.max_tokens

    def share(self) -> float:
        """The largest share of a cap spent so far."""
        shares = [0.0]
        if self.caps.max_cost_usd:
            shares.append(self.spent_usd / self.caps.max_cost_usd)
        if self.caps.max_tokens:
            shares.append(self.spent_tokens / self.caps.max_tokens)
        return max(shares)


@dataclass
class Reservation:
    row: str
    accounts: list[_Account]
    """The accounts holding it (the daily one included)."""
    usd: float
    tokens: int
    settled: bool = field(default=False)


class BudgetLedger:
    """One run's budget accounts; their spend so far comes from the run store (``spent``)."""

    def __init__(
        self,
        run_id: str,
        caps: ProjectBudget | None,
        agent_caps: Mapping[str, BudgetLimits],
        *,
        store: RunStore | None = None,
        spent: Mapping[str, tuple[float, int]] | None = None,
        on_event: Callable[[str, BudgetStatus], None] | None = None,
        daily: tuple[str, float] | None = None,
    ) -> None:
        """``spent``: (USD, tokens) per account already spent in this run (``""``: the run's); ``daily``: the
        project's name and daily cap in USD (applied only with a ``store``)."""
        self.run_id = run_id
        self._store = store
        self._warn_at = caps.warn_at if caps is not None else 0.8
        self._accounts: dict[str, _Account] = {}
        if caps is not None:
            self._accounts[RUN] = _Account(caps)
        for agent, limits in agent_caps.items():
            self._accounts[agent] = _Account(limits)
        for name, (usd, tokens) in (spent or {}).items():
            if name in self._accounts:
                self._accounts[name].spent_usd, self._accounts[name].spent_tokens = usd, tokens
        self._project = daily[0] if daily is not None and store is not None else None
        self._daily = _Account(BudgetLimits(max_cost_usd=daily[1])) if self._project is not None and daily else None
        self._on_event = on_event
        self._settled = anyio.Event()

    def limits(self, agent: str, *, priced: bool = True) -> bool:
        """Whether any cap applies to ``agent``'s calls (the daily cap, in USD, only to a ``priced`` agent's)."""
        return (self._daily is not None and priced) or RUN in self._accounts or agent in self._accounts

    async def reserve(self, agent: str, usd: float, tokens: int) -> Reservation:
        """Reserve a call's worst case in the run's and ``agent``'s accounts (waiting while others' reservations
        may free room); raise :class:`BudgetExhaustedError` when it cannot fit."""
        accounts = [account for name in (RUN, agent) if (account := self._accounts.get(name)) is not None]
        row = secrets.token_hex(8)
        while True:
            full = [account for account in accounts if not account.fits(usd, tokens)]
            if not full and (self._daily is None or not usd):  # a call that costs nothing fits any daily cap
                break
            if not full and self._daily is not None:
                if self._reserve_daily(row, agent, usd, tokens):  # written with its check: durable already
                    accounts.append(self._daily)
                    break
                full = [self._daily]
            if not any(account.outstanding for account in full):
                self._refused(agent, full)
                raise BudgetExhaustedError(self._refusal(agent, usd, tokens))
            await self._settled.wait()
        for account in accounts:
            account.reserved_usd += usd
            account.reserved_tokens += tokens
            account.outstanding += 1
        reservation = Reservation(row, accounts, usd, tokens)
        if self._store is not None and self._daily not in accounts:  # durable before the call is sent
            await self._store.reserve_spend(self.run_id, row, agent, usd, tokens)
        return reservation

    def _reserve_daily(self, row: str, agent: str, usd: float, tokens: int) -> bool:
        """Reserve in the store against the project's daily cap; whether it fitted."""
        assert self._store is not None and self._project is not None and self._daily is not None
        cap = self._daily.caps.max_cost_usd or 0.0
        fitted, spent = self._store.reserve_daily_spend(self._project, cap, self.run_id, row, agent, usd, tokens)
        self._daily.spent_usd = spent - self._daily.reserved_usd  # the day's spend, this run's reservations apart
        return fitted

    def settle(self, reservation: Reservation, usd: float, tokens: int) -> None:
        """Replace ``reservation`` by what the call actually spent."""
        if reservation.settled:
            return
        reservation.settled = True
        for account in reservation.accounts:
            account.reserved_usd -= reservation.usd
            account.reserved_tokens -= reservation.tokens
            account.outstanding -= 1
            account.spent_usd += usd
            account.spent_tokens += tokens
        if self._store is not None:
            self._store.settle_spend(self.run_id, reservation.row, usd, tokens)
        for name, account in self._named():
            if not account.warned and account.share() >= self._warn_at:
                account.warned = True
                self._announce("budget_warning", name, account)
        self._settled.set()
        self._settled = anyio.Event()

    def _named(self) -> list[tuple[str, _Account]]:
        daily = [(DAILY, self._daily)] if self._daily is not None else []
        return [*self._accounts.items(), *daily]

    def _refused(self, agent: str, full: Sequence[_Account]) -> None:
        for name, account in self._named():
            if account in full and not account.refused:
                account.refused = True
                self._announce("budget_exhausted", name, account)

    def _refusal(self, agent: str, usd: float, tokens: int) -> str:
        parts = []
        for name in (RUN, agent):
            account = self._accounts.get(name)
            if account is None or account.fits(usd, tokens):
                continue
            caps, label = account.caps, "the run's budget" if name == RUN else f"agent '{agent}''s budget"
            if caps.max_cost_usd is not None:
                parts.append(f"{label}: ${account.spent_usd:.6f} spent of ${caps.max_cost_usd:g}")
            if caps.max_tokens is not None:
                parts.append(f"{label}: {account.spent_tokens} tokens spent of {caps.max_tokens}")
        if self._daily is not None and not parts:
            spent, cap = self._daily.spent_usd + self._daily.reserved_usd, self._daily.caps.max_cost_usd or 0.0
            parts.append(f"project '{self._project}''s daily budget: ${spent:.6f} spent or reserved today of ${cap:g}")
        worst = f"the call's worst case is ${usd:.6f} and {tokens} tokens"
        return f"budget exhausted: {'; '.join(parts)}; {worst}"

    def _announce(self, kind: str, name: str, account: _Account) -> None:
        if self._on_event is None:
            return
        status = BudgetStatus(
            account="run" if name == RUN else name,
            spent_usd=account.spent_usd,
            spent_tokens=account.spent_tokens,
            cap_usd=account.caps.max_cost_usd,
            cap_tokens=account.caps.max_tokens,
            exhausted=account.refused,
        )
        self._on_event(kind, status)


class BudgetedLlm(WrapperLlm):
    """A model whose every call reserves its worst case in ``ledger`` first, and settles after."""

    def __init__(
        self,
        wrapped: BaseLlm,
        ledger: BudgetLedger,
        agent: str,
        provider: str,
        pricing: str | None,
        *,
        batch: bool = False,
    ) -> None:
        """``batch``: ``wrapped`` answers through a batch API, whose prices its calls reserve and settle at."""
        super().__init__(wrapped)
        self.ledger = ledger
        self.agent = agent
        self._provider = provider
        self._pricing = pricing
        self._batch = batch

    def _cost(self, usage: Usage) -> float:
        """What ``usage`` costs (cache reads and writes at their prices)."""
        return (cost_usd(self._pricing, self.config.model, usage, batch=self._batch) or 0.0) if self._pricing else 0.0

    def worst_case(self, messages: Sequence[Message], options: GenerationOptions) -> tuple[float, int]:
        """The most a call can spend: (USD, tokens)."""
        count = count_input_tokens(self._provider, self.config.model, messages)
        # without the model's tokenizer, its UTF-8 bytes bound the prompt's tokens (no token is shorter than a byte)
        tokens_in = count.tokens if count.exact else sum(len(m.content.encode()) + 4 for m in messages) + 3
        tokens_in += sum(attachment_tokens(a) for m in messages for a in m.attachments)
        tokens_out = options.max_tokens or 0
        plain = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
        written = plain.model_copy(update={"cache_write_tokens": tokens_in})  # a prompt-cache write costs more
        return max(self._cost(plain), self._cost(written)), tokens_in + tokens_out

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        resolved = self.wrapped.resolve_options(options)
        if overrides:
            resolved = resolved.merged(GenerationOptions.model_validate(overrides))
        usd, tokens = self.worst_case(messages, resolved)
        reservation = await self.ledger.reserve(self.agent, usd, tokens)
        try:
            response = await self.wrapped.generate_content_async(messages, options, **overrides)
        except LlmError as exc:
            billed = exc.usage or Usage()
            self.ledger.settle(reservation, self._cost(billed), billed.input_tokens + billed.output_tokens)
            raise
        except Exception:
            self.ledger.settle(reservation, 0.0, 0)  # a bug of ours before or after the call: nothing was billed
            raise
        usage = response.usage
        if usage is None:  # no usage reported: the reservation stands as spent
            self.ledger.settle(reservation, usd, tokens)
        else:
            self.ledger.settle(reservation, self._cost(usage), usage.input_tokens + usage.output_tokens)
        return response


IMAGE_TOKENS = 2_000
"""An image's input tokens at most: OpenAI's high detail is at most 1,445 (8 tiles), Claude resizes to about
1,600, Gemini counts 258 per tile."""
PDF_PAGE_TOKENS = 5_000
"""A PDF page's input tokens at most (its text, and its image where the provider sends one)."""


def attachment_tokens(attachment: Attachment) -> int:
    """A bound of what an attachment adds to a call's input (text files are inlined in the prompt already).

    A PDF whose pages could not be counted is bounded by its size (a page per 2 KB), which a PDF of mostly images
    could exceed: the budget then holds only as an estimate."""
    if attachment.media_type.startswith("image/"):
        return IMAGE_TOKENS
    if attachment.media_type == "application/pdf":
        pages = attachment.pages or max(1, (attachment.size or 0) // 2_000)
        return pages * PDF_PAGE_TOKENS
    return 0


def budget_issues(project: Project, caps: ProjectBudget | None, priced: Callable[[str], bool]) -> list[ValidationIssue]:
    """Tasks whose calls would have no upper bound under a cap: without ``max_tokens`` (the task's or its
    agent's) while a token cap applies to them, or a cost cap does and their agent is ``priced``."""
    issues = []
    for task in project.tasks:
        if task.step is not None:  # a code step calls no model
            continue
        agent = project.registry.get(task.agent)
        applying = [limits for limits in (caps, agent.budget) if limits is not None]
        tokens_capped = any(limits.max_tokens is not None for limits in applying)
        cost_capped = any(limits.max_cost_usd is not None for limits in applying)
        if not (tokens_capped or (cost_capped and priced(task.agent))):
            continue
        if task.options.max_tokens is None and agent.options.max_tokens is None:
            issues.append(
                ValidationIssue(
                    "a budgeted call needs an upper bound of its output: set options.max_tokens on the task or"
                    f" on agent '{task.agent}'",
                    file=project.file,
                    task=task.id,
                    field="options.max_tokens",
                )
            )
    return issues
