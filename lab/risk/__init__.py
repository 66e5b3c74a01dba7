"""Disclosure risk over the release universe of an organisation (docs/risk.md).

``measures`` computes the risk of a released table (prosecutor, journalist, marketer,
k-anonymity, l-diversity, household and trajectory risk, as ARX and sdcMicro define them);
``protect`` plans what a build withholds so households and trajectories reach k;
``report`` assembles the per-extract report, the joined views an organisation can build
from linked extracts (and public registers), and refuses a build above the policy's threshold.
"""

from __future__ import annotations

from lab.risk.measures import (
    HouseholdRisk,
    RecordRisk,
    TrajectoryRisk,
    household_risk,
    l_diversity,
    record_risk,
    trajectory_risk,
)
from lab.risk.protect import HouseholdPlan, TrajectoryPlan, plan_households, plan_trajectories
from lab.risk.report import RiskReport, joined_view, measure, person_column, refuse_if_exceeded

__all__ = [
    "HouseholdPlan",
    "HouseholdRisk",
    "RecordRisk",
    "RiskReport",
    "TrajectoryPlan",
    "TrajectoryRisk",
    "household_risk",
    "joined_view",
    "l_diversity",
    "measure",
    "person_column",
    "plan_households",
    "plan_trajectories",
    "record_risk",
    "refuse_if_exceeded",
    "trajectory_risk",
]
