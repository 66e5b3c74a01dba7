"""Sensitive-data discovery (敏感数据识别): find identifiers in a file by its values.

``datalab dataset scan SOURCE [--json]`` reads a sample of every column of a CSV (UTF-8 or
GB18030) or Parquet file in bounded memory and proposes, per column, what it holds and how
a policy should treat it: grading (``level``), PI class (``pi``), identifier role and masking
rule, with the evidence (share of matching values, masked examples). Column names are not
trusted: a column called ``col_7`` full of resident ID numbers is found by their check
characters.

Modules, data flowing one way:

- ``checks``: check characters of resident ID numbers (GB 11643-1999, ISO 7064 MOD 11-2),
  unified social credit codes (GB 32100-2015 with GB 11714), bank cards (ISO/IEC 7812 Luhn),
  and mobile numbers, scalar and as Polars expressions;
- ``patterns``: names, addresses, e-mail, licence plates, dates, sex;
- ``kinds``: the detectable kinds, the policy proposed for each, masking of examples;
- ``source``: reading a sample per column (encodings, malformed rows);
- ``scan``: the classifier; ``report``: text for an operator, and a draft policy.

No module here imports the synthetic generator (``lab.synthetic``): discovery runs on real
registers.
"""

from __future__ import annotations

from lab.discovery.kinds import KINDS, Kind
from lab.discovery.report import draft_policy, draft_yaml, to_text
from lab.discovery.scan import ColumnFinding, Evidence, ScanResult, classify, scan_source
from lab.discovery.source import DEFAULT_CAP, Sample, read_sample

__all__ = [
    "DEFAULT_CAP",
    "KINDS",
    "ColumnFinding",
    "Evidence",
    "Kind",
    "Sample",
    "ScanResult",
    "classify",
    "draft_policy",
    "draft_yaml",
    "read_sample",
    "scan_source",
    "to_text",
]
