"""Delivery governance (SPEC 7), the pure part: what a journey asks of every send, and when a send must wait.

Applied by every channel node (`behaviour.send`), in this order: the customer's preference for the channel
(`PREFERENCE_OFF`), a contact to send to (`NO_CONTACT`), the journey's frequency cap counted over all the tenant's
flows (`FREQUENCY_CAPPED`), then quiet hours, which do not skip the send but defer it to the window's end
(`deferred_until`). A send that is skipped leaves its reason on a `SKIPPED` step and the path continues.
The counting and the reading of preferences are the `NodeContext`'s, shared with the `frequency_cap` and
`preference_gate` nodes, so a rule has one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kalcifer_common.durations import DurationError, parse_duration

PREFERENCE_OFF: Final = "PREFERENCE_OFF"
NO_CONTACT: Final = "NO_CONTACT"
FREQUENCY_CAPPED: Final = "FREQUENCY_CAPPED"

# The profile field a channel needs to reach the customer (push and in-app go to the app, not to an address).
CONTACT_OF_CHANNEL: Final[Mapping[str, str]] = {"email": "email", "sms": "phone", "whatsapp": "phone"}


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max_messages` on `channel` (None: every channel) within `window`."""

    max_messages: int
    window: timedelta
    channel: str | None

    def counts(self, channel: str) -> bool:
        """Whether a send on `channel` is one the cap counts (and so may be capped)."""
        return self.channel is None or self.channel == channel


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local window [start, end) in `timezone` (None: the customer's, else UTC); may cross midnight."""

    start: time
    end: time
    timezone: str | None


@dataclass(frozen=True, slots=True)
class JourneyRules:
    """The governance settings of the journey wrapping a flow."""

    journey_id: str
    frequency_cap: FrequencyCap | None
    quiet_hours: QuietHours | None

    @classmethod
    def from_row(
        cls, journey_id: str, frequency_cap: Mapping[str, Any] | None, quiet_hours: Mapping[str, Any] | None
    ) -> JourneyRules:
        """From the stored journey (validated by the API on write; anything unreadable is treated as unset)."""
        return cls(journey_id, _cap(frequency_cap), _quiet(quiet_hours))


def _cap(stored: Mapping[str, Any] | None) -> FrequencyCap | None:
    if not stored:
        return None
    try:
        window = parse_duration(str(stored.get("time_window", "")))
        max_messages = int(stored.get("max_messages", 0))
    except (DurationError, TypeError, ValueError):
        return None
    if max_messages < 1:
        return None
    channel = stored.get("channel")
    return FrequencyCap(max_messages, window, channel if isinstance(channel, str) and channel else None)


def _quiet(stored: Mapping[str, Any] | None) -> QuietHours | None:
    if not stored:
        return None
    try:
        start, end = time.fromisoformat(str(stored.get("start"))), time.fromisoformat(str(stored.get("end")))
    except ValueError:
        return None
    zone = stored.get("timezone")
    return QuietHours(start, end, zone if isinstance(zone, str) and zone else None)


def missing_contact(channel: str, profile: Mapping[str, Any] | None) -> str | None:
    """The profile field `channel` needs and the customer lacks (None when the send can reach them)."""
    needed = CONTACT_OF_CHANNEL.get(channel)
    if needed is None:
        return None
    value = (profile or {}).get(needed)
    return None if isinstance(value, str) and value.strip() else needed


def _zone(name: str | None) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def deferred_until(now: datetime, quiet: QuietHours, customer_timezone: str | None) -> datetime | None:
    """When a send at `now` may go: the end of the quiet window it falls in (UTC), or None outside the window.

    Read on the wall clock of the window's timezone (else the customer's, else UTC) with `zoneinfo`, so the end is
    right on both sides of a daylight saving change: 08:00 Berlin is 07:00 UTC in winter and 06:00 UTC in summer.
    An end that falls in the hour a spring-forward change skips is read with the offset before the change (02:30
    on that night in Berlin is 03:30 summer time), so a deferral never lands inside the window.
    """
    zone = _zone(quiet.timezone or customer_timezone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:  # crosses midnight: [start, 24:00) and [00:00, end)
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, quiet.end, tzinfo=zone).astimezone(UTC)
