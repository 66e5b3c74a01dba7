"""DP tables and DP synthetic data from a notebook, with their cost shown before anything is spent::

    t = lab.dp_table("population", tables=[{"name": "by_district", "group_by": ["district"]}],
                     epsilon=0.5)
    t                     # the preview: ε, δ, cells and accuracy per table, budget left; spends nothing
    built = t.release()   # builds and publishes for your organisation; charged once
    built.data            # the tables (a dict of DataFrames by name), or the synthetic rows

    s = lab.dp_synthetic("population", epsilon=1.0, columns=["sex", "district", "education"])

A pending extract carries a request id: ``release()`` again, or after a timeout, asks the
gateway for the same build, which answers with the extract already built and charges
nothing more. A spec the gateway refuses (an unknown or forbidden column, too little
budget) is refused before anything is charged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.client import Connection

TABLE_KIND, SYNTHETIC_KIND = "dp-table", "dp-synthetic"


def spec_of(spec: Mapping[str, Any] | str | Path | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A spec from a dict, a YAML/JSON file, or keyword fields (which override the file's)."""
    base: dict[str, Any] = {}
    if isinstance(spec, str | Path):
        import yaml

        from lab.errors import ConfigError

        try:
            loaded = yaml.safe_load(Path(spec).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"Cannot read the spec file {spec} ({type(exc).__name__}); check its path and YAML. "
                f"/ 无法读取规格文件 {spec}，请检查路径与 YAML 格式。",
                reason="dpx-spec",
            ) from None
        base = dict(loaded) if isinstance(loaded, Mapping) else {}
    elif spec is not None:
        base = dict(spec)
    base.update({k: v for k, v in fields.items() if v is not None})
    return base


class PendingExtract:
    """A DP extract not yet built. Its repr is the preview; ``release()`` spends the budget once."""

    def __init__(self, connection: Connection, dataset: str, kind: str, spec: dict[str, Any]) -> None:
        self._connection = connection
        self.dataset, self.kind, self.spec = dataset, kind, spec
        self.request_id = uuid.uuid4().hex
        self._preview: dict[str, Any] | None = None
        self._built: BuiltExtract | None = None

    def _body(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "kind": self.kind, "spec": self.spec}

    def preview(self) -> dict[str, Any]:
        """The plan (ε, δ, cells, noise and 95% accuracy) and your remaining budget; spends nothing."""
        if self._preview is None:
            self._preview = dict(self._connection._call("POST", "/extracts/preview", json=self._body()))
        return self._preview

    def release(self) -> BuiltExtract:
        """Build the extract for your organisation: charged once, however often this is called."""
        if self._built is None:
            body = {**self._body(), "request_id": self.request_id}
            manifest = dict(self._connection._call("POST", "/extracts", json=body))
            data = self._connection._extract_version(self.dataset, self.kind, str(manifest["version"]))
            self._built = BuiltExtract(manifest, data)
        return self._built

    def __repr__(self) -> str:
        p = self.preview()
        plan, budget = p["plan"], p["budget"]
        what = "DP tables / 差分隐私表" if self.kind == TABLE_KIND else "DP synthetic data / 差分隐私合成数据"
        cost = f"ε={p['epsilon']:g}" + (f", δ={p['delta']:g}" if p["delta"] else "")
        lines = [f"{what} of {self.dataset} (not yet built / 尚未生成)", f"  cost 花费: {cost}"]
        for t in plan.get("tables", []):
            lines.append(
                f"  table {t['name']}: {t['statistic']} by {', '.join(t['group_by']) or '-'}, "
                f"{t['cells']} cells 单元格, ±{t['ci_half_width']:.4g} (95%)"
            )
        for m in plan.get("marginals", []):
            shown = " × ".join(m["columns"])
            lines.append(f"  marginal 边际 {shown}: {m['cells']} cells, ±{m['ci_half_width']:.4g}")
        left, asked = budget["epsilon_remaining"], p["epsilon"]
        if asked > left or p["delta"] > budget["delta_remaining"]:
            lines.append(
                f"  ✗ budget: ε {asked:g} exceeds what is left (ε {left:g}); release() will be refused "
                f"/ 预算不足：所需 ε {asked:g} 超过剩余的 ε {left:g}，release() 将被拒绝"
            )
        else:
            lines.append(f"  budget 预算: ε {left:g} left 剩余 → {left - asked:g} after release() 执行后")
        return "\n".join(lines)


class BuiltExtract:
    """A DP extract built for your organisation: ``data`` (tables by name, or the synthetic
    rows), its ``manifest`` and ``epsilon``; later ``lab.extract(dataset, kind=...)`` loads it
    again without spending anything."""

    def __init__(self, manifest: dict[str, Any], data: Any) -> None:
        self.manifest, self.data = manifest, data
        self.kind, self.version = manifest["kind"], manifest["version"]
        self.epsilon, self.delta = manifest["epsilon"], manifest["delta"]
        self.budget: dict[str, Any] = manifest.get("budget") or {}

    def __repr__(self) -> str:
        if isinstance(self.data, dict):
            shown = ", ".join(f"{name} ({frame.height} rows)" for name, frame in self.data.items())
        else:
            shown = f"{self.data.height} synthetic rows 合成记录"
        left = self.budget.get("epsilon_remaining")
        tail = f"; budget left 剩余预算: ε {left:g}" if isinstance(left, int | float) else ""
        return (
            f"{self.kind} {self.manifest['dataset']} version {self.version} built 已生成: {shown}\n"
            f"spent 花费 ε={self.epsilon:g} δ={self.delta:g}{tail}"
        )
