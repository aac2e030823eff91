"""Webhook intake: a SendGrid Event Webhook batch into the event inbox, with what became of
each event. The HTTP route (``POST /events``) is a thin shell over :func:`take_sendgrid_batch`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sendtime.features.importers import import_sendgrid
from sendtime.features.inputs import DUPLICATE_EVENT
from sendtime.serving.event_store import SECOND_SEND, EventStore


@dataclass
class Intake:
    received: int
    accepted: int
    duplicates: int
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, reason), in batch order

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, why in self.rejects:
            out[why] = out.get(why, 0) + 1
        return out


def take_sendgrid_batch(records: list[dict], store: EventStore, user_ids: str, salt: str) -> Intake:
    """Import the batch into the contract and append it to ``store``, idempotently: events
    already stored (a replayed or overlapping batch) and repeats inside the batch count as
    duplicates; events the contract refuses come back with their reasons."""
    imported = import_sendgrid(records, user_ids=user_ids, salt=salt, require_sends=False)
    stored = store.append(imported.events)
    in_batch = imported.rejects["reason"] == DUPLICATE_EVENT
    rejects = [(int(r.source_row), str(r.reason)) for r in imported.rejects.loc[~in_batch].itertuples()]
    if len(stored.refused):
        index: dict[str, int] = {}
        for i, rec in enumerate(records):
            if isinstance(rec.get("sg_event_id"), str):
                index.setdefault(rec["sg_event_id"].strip(), i)
        rejects += [(index[e], SECOND_SEND) for e in stored.refused["event_id"]]
    rejects.sort()
    return Intake(received=len(records), accepted=stored.stored, duplicates=stored.duplicates + int(in_batch.sum()),
                  rejects=rejects)
