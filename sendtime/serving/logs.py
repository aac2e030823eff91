"""Keep user data out of the service's logs.

BentoML logs every rejected request with its traceback, and a pydantic validation error's
traceback quotes the offending input: a user id, in clear. This filter turns client errors
(4xx) into one line that names the fields and error types but no values.
"""

from __future__ import annotations

import logging


class ScrubClientErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            where = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])} ({e['type']})" for e in exc.errors(include_input=False)[:5]
            )
            record.msg, record.args = f"rejected request: {exc.error_count()} invalid field(s): {where}", ()
            record.exc_info, record.exc_text = None, None
        elif isinstance(exc, BentoMLException) and int(getattr(exc.error_code, "value", 500)) < 500:
            record.msg, record.args = f"rejected request: {type(exc).__name__}", ()
            record.exc_info, record.exc_text = None, None
        return True


def install(logger_names: tuple[str, ...] = ("bentoml._internal.server.http_app", "bentoml.serve", "bentoml")) -> None:
    for name in logger_names:
        log = logging.getLogger(name)
        if not any(isinstance(f, ScrubClientErrors) for f in log.filters):
            log.addFilter(ScrubClientErrors())
