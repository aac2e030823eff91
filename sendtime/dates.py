"""Dates given on the command line: ISO 8601 ``YYYY-MM-DD`` only.

``pd.Timestamp`` guesses: ``31/10/2026`` is 31 October but ``01/02/2026`` is 2 January. A cutoff
that silently means another day trains on the wrong history, so anything but the one
unambiguous form is refused, with a message that shows the form expected.
"""

from __future__ import annotations

import datetime as _dt
import re

import pandas as pd

ISO_DATE_FORM = "YYYY-MM-DD"
ISO_DATE_EXAMPLE = "2026-10-31"
# ASCII digits only: ``\d`` would also let through other scripts' digits.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def date_error(text: object, option: str) -> str:
    """The one-line refusal, the same for every date option."""
    return f"{option} must be a date in ISO 8601 form {ISO_DATE_FORM} (e.g. {ISO_DATE_EXAMPLE}), got {text!r}"


def parse_iso_date(text: str, option: str = "--as-of") -> pd.Timestamp:
    """``text`` as 00:00 UTC of that calendar day; ValueError (naming ``option``) for anything
    but a strict ``YYYY-MM-DD`` real date: no slashes, no missing zeros, no time, no 30 February."""
    if not isinstance(text, str) or not _ISO_DATE.fullmatch(text):
        raise ValueError(date_error(text, option))
    try:
        _dt.date.fromisoformat(text)  # the calendar check: month 1-12, day within the month
    except ValueError:
        raise ValueError(date_error(text, option)) from None
    return pd.Timestamp(text).tz_localize("UTC")
