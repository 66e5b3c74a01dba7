"""De-identification of a table for one organisation, and tracing of leaked extracts.

``mask_parquet(source, dest, policy, key)`` (or ``mask_frame`` in memory) applies the
dataset's policy (``lab.policy``) for the organisation holding ``key``:

- direct identifiers are dropped or replaced by **keyed pseudonyms**: one key per
  (key family, organisation), so an organisation's population and social-insurance extracts
  join on ``resident_id`` while two organisations' extracts share no pseudonym;
- quasi-identifiers are generalised (birth date to year or 5-year band, address to district,
  amounts to bands or top-coded), rare values suppressed, then rows of groups with fewer than
  k privacy units (or fewer than l distinct sensitive values) are suppressed; the report gives
  rows in and out, and the achieved k and l;
- a last check refuses to write any released text that looks like a resident ID or phone.

Per-recipient fingerprint
-------------------------
A leaker may delete the pseudonym columns, keep a sample of rows, or reorder them, so the
mark is carried *in the released values*, row by row, and needs no row identifier:

1. **Pseudonym tags.** Each 28-letter pseudonym is ``core (80 bits) || tag (32 bits)``;
   the tag is AES under the organisation's tag key of the core. Any row with a pseudonym
   proves the recipient, with a false-match rate of 2^-32 per value.
2. **Value marks.** Numbers the policy marks with ``watermark: <unit>`` (e.g. utility
   consumption, 0.01) are rounded to the unit and the parity of the last unit is set to a
   keyed bit of the higher digits (a change of at most one unit). Each distinct value is a
   fair coin for any other key, so a few dozen values name the recipient even with every
   pseudonym column removed.

Extracts whose released values are all coarse categories (the population register's) carry
the fingerprint only in their pseudonyms: stripped of every pseudonym they carry none, and
``trace`` then names nobody rather than guessing. ``trace`` never names an organisation whose
key did not build the file (false-positive bound: the ``threshold``, 1e-9).

What ``trace`` needs
--------------------
- ``keys``: the ``OrgKey(org, secret)`` of every candidate organisation (the same secrets the
  builds used; one secret per organisation, from the bureau's key store);
- optionally ``builds``: the ``MaskReport.fingerprint`` of each build, as stored in the ledger
  (``Fingerprint.to_dict`` / ``from_dict``; no secret in it). With them ``trace`` also tests
  each build's recorded watermark units and returns the builds that fit the file.
"""

from __future__ import annotations

from lab.masking.build import Fingerprint, MaskReport, mask_frame, mask_parquet, preview_risk
from lab.masking.keyed import SCHEME, OrgKey, pseudonymise
from lab.masking.trace import Evidence, TraceResult, trace

__all__ = [
    "SCHEME",
    "Evidence",
    "Fingerprint",
    "MaskReport",
    "OrgKey",
    "TraceResult",
    "mask_frame",
    "mask_parquet",
    "preview_risk",
    "pseudonymise",
    "trace",
]
