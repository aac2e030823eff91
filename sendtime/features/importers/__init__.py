"""Importers: the email platforms' own event exports, turned into the event contract.

Why: teams hold SendGrid Event Webhook dumps, Mailchimp email-activity reports and Amazon SES
event streams, not the contract's table. Each importer only *maps* its format (field names,
event types, ids, times); the contract (:func:`sendtime.features.contract.validate_events`) then judges
the mapped rows exactly as it judges a hand-written file. Nothing is dropped silently: every
source event ends up in ``events`` or in ``rejects`` (with its original content as text and a
reason), so ``accepted + rejected == read``. A file that cannot be parsed at all raises
:class:`~sendtime.features.contract.ContractError` with a one-line message.

``read`` counts source events: a SendGrid array element, an SES record per recipient, a CSV
row, and for Mailchimp every recipient's send (implied by the campaign) plus each of their
activities. The field-by-field mapping of every format is in docs/importers.md.

Shared conventions: ``user_id`` is the recipient's address, trimmed and lower-cased (or, with
``user_ids="sha256"``, the hex SHA-256 of ``salt`` + that address, so no address is stored);
the users table must use the same form. ``message_id`` is ``<platform message id>:<user_id>``,
one message per recipient, as the contract's "one send per message" needs.

One module per format (``sendgrid``, ``mailchimp``, ``ses``, ``onesignal`` for push, e-mail and SMS
receipts of OneSignal's Event Streams, ``table`` for any CSV or Parquet),
the shared mapping machinery in ``mapping``, and the dispatch and file writing in ``files``.
"""

from sendtime.features.importers.files import FORMATS, import_events, import_file, rejects_path_for, write_events_parquet
from sendtime.features.importers.mailchimp import import_mailchimp
from sendtime.features.importers.mapping import COLUMNS, USER_ID_FORMS, ImportResult, user_key
from sendtime.features.importers.onesignal import import_onesignal
from sendtime.features.importers.sendgrid import import_sendgrid, sendgrid_message_id
from sendtime.features.importers.ses import import_ses
from sendtime.features.importers.table import import_csv

__all__ = [
    "COLUMNS", "FORMATS", "USER_ID_FORMS", "ImportResult", "import_csv", "import_events", "import_file",
    "import_mailchimp", "import_onesignal", "import_sendgrid", "import_ses", "rejects_path_for", "sendgrid_message_id",
    "user_key", "write_events_parquet",
]
