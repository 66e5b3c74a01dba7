"""Demo data for a new lab: registers in the raw bucket, demo grants, their masked extracts.

Each step runs only when its result is missing, so ``datalab up`` on an existing lab
leaves the operators' real grants and data alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lab import demo, extracts, registers, storage
from lab.registry.catalogue import DATASETS
from lab.settings import Settings
from lab.stack.ui import Progress


def seed(settings: Settings, ui: Progress) -> None:
    client = storage.root_client(settings)
    missing = [name for name in DATASETS if registers.raw_meta(client, name) is None]
    if missing:
        with ui.step(f"Generating demo registers ({demo.DATA_ROWS:,} residents)"):
            from lab.stack import demodata  # the generator is loaded only to make demo data

            demodata.generate(settings, rows=demo.DATA_ROWS, seed=demo.DATA_SEED, names=missing)
    with extracts.ledger(settings) as ledger:
        if ledger.list_grants():
            return
        with ui.step("Creating demo grants and their masked extracts"):
            now = datetime.now(UTC)
            for grant in demo.GRANTS:
                ledger.create_grant(
                    organisation=grant.org,
                    dataset=grant.dataset,
                    purpose=grant.purpose,
                    modes=grant.modes,
                    epsilon=grant.epsilon,
                    delta=grant.delta,
                    expires_at=now + timedelta(days=grant.days),
                    approved_by=demo.OPERATOR,
                )
    for grant in demo.GRANTS:
        if "masked" in grant.modes and not extracts.versions(settings, grant.org, grant.dataset):
            extracts.build(settings, grant.dataset, grant.org, actor=demo.OPERATOR)
