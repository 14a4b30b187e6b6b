"""Waiting well, in the call: at the routing step the session asks `CallWaiting.at_routing`
whether the target queue is closed or its expected wait is long; if so the caller hears it
and is offered a callback, and the caller's next inputs come here until it is settled.

    offered --yes/1--> (caller id known) booked
            \\--yes/1--> (number withheld) entering --digits, #--> read back --yes/1--> booked
                                                   ^----------------2/no---------/
            --no/2--> open queue: routed as decided; closed queue: goodbye

Every step answers with a Decision the session acts on as on any other: say, route, hang up.
Emergencies never get here: the session calls this only for a hand-off to a forvaltning's
queue, and an emergency hands off to none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from enum import StrEnum
from typing import TYPE_CHECKING

from voicebot import metrics
from voicebot.dialogue import Decision
from voicebot.hours import TIMEZONE, spoken_when
from voicebot.privacy import mask_caller
from voicebot.queues import RoutedCall
from voicebot.queues.wait import queue_wait
from voicebot.waiting_prompts import load_waiting, spoken_digits

if TYPE_CHECKING:
    from voicebot.services import Services

log = logging.getLogger("voicebot.waiting")

MAX_RETRIES = 2  # an unclear answer is asked again at most this often
WITHHELD = {"anonymous", "unknown", "private", "restricted", "withheld", "unavailable"}


def now() -> dt.datetime:
    """The clock (tests freeze it)."""
    return dt.datetime.now(TIMEZONE)


def caller_number(caller: str | None) -> str | None:
    """The platform's caller id as a number to call back; None when withheld."""
    if not caller or caller.strip().lower() in WITHHELD:
        return None
    digits = sum(ch.isdigit() for ch in caller)
    return caller.strip() if digits >= 3 else None


class Step(StrEnum):
    IDLE = "idle"
    OFFERED = "offered"
    ENTERING = "entering"
    READ_BACK = "read_back"


class CallWaiting:
    """One call's way through a closed queue or a long wait."""

    def __init__(self, services: Services, language: str = "da") -> None:
        self.services = services
        self.settings = services.settings.waiting
        self.data = load_waiting(services.settings, services.catalogue)
        self.prompts = self.data.prompts.get(language) or self.data.prompts["da"]
        self.language = self.prompts.language
        self.step = Step.IDLE
        self.routing: Decision | None = None  # the routing decision held back
        self.record: RoutedCall | None = None  # the queue record a callback is made of
        self.closed = False
        self.digits = ""
        self.retries = 0
        self.routed_to: str | None = None  # the queue the call was last routed to
        self.caller: str | None = None  # the caller id to call back; None: withheld
        self.settled = False  # offered once and answered: the call goes on as decided

    @property
    def active(self) -> bool:
        """The caller's inputs are ours until the offer is settled."""
        return self.step is not Step.IDLE

    # == the routing step ====================================================================
    async def at_routing(
        self, decision: Decision, record: RoutedCall, caller: str | None
    ) -> Decision | None:
        """Before a hand-off to `decision.forvaltning`: None to route as decided, or what to
        say instead (the queue is closed, or its wait is long and a callback is offered).
        `caller` is the platform's caller id, used only to book a callback."""
        if self.active or self.settled or decision.forvaltning is None:
            return None
        self.caller = caller_number(caller)
        queue = decision.forvaltning
        self.routed_to = queue
        metrics.QUEUE_OFFERED.labels(queue).inc()
        at = now()
        name = self.services.catalogue.queue_name(queue, self.language)
        if not self.data.hours.is_open(queue, at):
            metrics.OUT_OF_HOURS.labels(queue).inc()
            opens = self.data.hours.next_open(queue, at)
            said = (
                self.prompts.say(
                    "closed", queue_name=name, when=spoken_when(opens, at, self.language)
                )
                if opens
                else self.prompts.say("closed_not_reopening", queue_name=name)
            )
            if not self.settings.offer_callback:
                return self._goodbye(f"{said} {self.prompts.say('declined_closed')}", "closed")
            return self._offer(decision, record, closed=True, said=said)
        estimate = await asyncio.to_thread(
            queue_wait,
            self.services.store,
            queue,
            at.timestamp(),
            self.settings.claim_rate_tau_min * 60,
            self.settings.min_recent_claims,
        )
        minutes = estimate.minutes
        if minutes is None or minutes <= self.settings.announce_wait_above_min:
            return None
        said = self.prompts.say("wait", minutes=minutes)
        if not self.settings.offer_callback:  # say the wait, then route as decided
            decision.say = f"{said} {decision.say}"
            return None
        return self._offer(decision, record, closed=False, said=said)

    def _offer(self, decision: Decision, record: RoutedCall, closed: bool, said: str) -> Decision:
        self.step, self.routing, self.record, self.closed = Step.OFFERED, decision, record, closed
        offer = self.prompts.say("closed_offer" if closed else "wait_offer")
        return Decision(
            "callback_offer",
            f"{said} {offer}",
            intent=decision.intent,
            confidence=decision.confidence,
            explanation=decision.explanation,
            reason="queue closed" if closed else "long wait",
        )

    # == the caller's answers ================================================================
    async def on_utterance(self, text: str) -> Decision:
        yes, no = self.prompts.is_yes(text), self.prompts.is_no(text)
        if self.step is Step.OFFERED:
            return await self._accept() if yes else self._decline() if no else self._again()
        if self.step is Step.READ_BACK:
            return await self._book(self.digits) if yes else self._enter() if no else self._again()
        return self._again()  # entering a number: keys only

    async def on_digit(self, digit: str) -> Decision:
        if self.step is Step.OFFERED:
            if digit == "1":
                return await self._accept()
            return self._decline() if digit in "20" else self._again()
        if self.step is Step.ENTERING:
            return self._key(digit)
        if self.step is Step.READ_BACK:
            if digit == "1":
                return await self._book(self.digits)
            return self._enter() if digit == "2" else self._again()
        return self._again()

    def on_no_input(self) -> Decision:
        return self._again()

    # == steps ===============================================================================
    async def _accept(self) -> Decision:
        return await self._book(self.caller) if self.caller else self._enter()

    def _enter(self) -> Decision:
        self.step, self.digits, self.retries = Step.ENTERING, "", 0
        return Decision(
            "callback_number", self.prompts.say("enter_number"), reason="number withheld"
        )

    def _key(self, digit: str) -> Decision:
        if digit == "*":  # start again
            return self._enter()
        if digit != "#":
            if len(self.digits) < self.settings.max_number_digits + 1:
                self.digits += digit
            return Decision("listen", "", reason="number digit")
        if (
            not self.settings.min_number_digits
            <= len(self.digits)
            <= self.settings.max_number_digits
        ):
            invalid = self._enter()
            invalid.say = f"{self.prompts.say('number_invalid')} {invalid.say}"
            return invalid
        self.step, self.retries = Step.READ_BACK, 0
        return self._read_back()

    def _read_back(self) -> Decision:
        digits = spoken_digits(self.digits, self.language)
        return Decision("callback_read_back", self.prompts.say("read_back", digits=digits))

    async def _book(self, number: str) -> Decision:
        assert self.record is not None and self.routing is not None
        queue = self.record.forvaltning
        try:
            await asyncio.to_thread(self.services.store.request_callback, self.record, number)
        except Exception:
            log.exception("call %s: the callback request could not be written", self.record.call_id)
            unavailable = self.prompts.say("callback_unavailable")
            return self._fall_back(unavailable)
        self.step, self.settled = Step.IDLE, True
        metrics.CALLBACKS_REQUESTED.labels(queue).inc()
        self.services.events.publish(
            self.record.call_id, "callback_requested", forvaltning=queue, number=mask_caller(number)
        )
        name = self.services.catalogue.queue_name(queue, self.language)
        return Decision(
            "callback_booked",
            self.prompts.say("callback_confirmed", queue_name=name),
            intent=self.routing.intent,
            hang_up=True,
            reason="callback requested",
        )

    def _decline(self) -> Decision:
        return self._fall_back("")

    def _fall_back(self, said: str) -> Decision:
        """No callback: a closed queue says goodbye, an open one routes as decided."""
        self.step, self.settled = Step.IDLE, True
        if self.closed or self.routing is None:
            return self._goodbye(
                f"{said} {self.prompts.say('declined_closed')}".strip(), "declined"
            )
        routing = self.routing
        routing.say = f"{said} {routing.say}".strip()
        return routing

    def _again(self) -> Decision:
        self.retries += 1
        if self.retries > MAX_RETRIES:
            return self._fall_back("")
        if self.step is Step.OFFERED:
            offer = self.prompts.say("closed_offer" if self.closed else "wait_offer")
            return Decision("callback_offer", offer, reason="asked again")
        if self.step is Step.READ_BACK:
            return self._read_back()
        return Decision("callback_number", self.prompts.say("enter_number"), reason="asked again")

    @staticmethod
    def _goodbye(say: str, reason: str) -> Decision:
        return Decision("goodbye", say, hang_up=True, reason=reason)

    def abandoned(self) -> None:
        """The caller left before the hand-off to `routed_to` completed."""
        if self.routed_to:
            metrics.QUEUE_ABANDONED.labels(self.routed_to).inc()
