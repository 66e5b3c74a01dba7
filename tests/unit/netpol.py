"""A small evaluator of Kubernetes NetworkPolicy objects (``networking.k8s.io/v1``), for tests.

``allowed(policies, source, destination, port)`` says whether a CNI that enforces the
policies lets ``source`` open a connection to ``destination``: the source's egress and the
destination's ingress must both admit it. A pod selected by no policy of a direction is
not isolated in it. Implemented: podSelector and namespaceSelector (matchLabels and
matchExpressions), ipBlock (cidr, except), ports by number or container port name, endPort,
protocols. What a real cluster adds (the CNI's own rules, host networking, node-local DNS)
is not modelled; see deploy/README.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Pod", "allowed"]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ip: str = "10.244.0.2"
    # Named container ports (what a policy's ``port: http`` means on this pod).
    ports: dict[str, int] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def all_namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} | self.namespace_labels


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector; ``{}`` selects everything (as in Kubernetes)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(pod.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if "namespaceSelector" in peer:
        in_namespace = _matches(peer["namespaceSelector"], pod.all_namespace_labels)
    else:
        in_namespace = pod.namespace == policy_namespace
    return in_namespace and _matches(peer.get("podSelector"), pod.labels)


def _port_matches(rule_port: dict[str, Any], destination: Pod, port: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return destination.ports.get(wanted) == port
    return int(wanted) <= port <= int(rule_port.get("endPort", wanted))


def _direction_allows(
    policies: list[dict[str, Any]],
    pod: Pod,
    direction: str,
    peer: Pod,
    destination: Pod,
    port: int,
    protocol: str,
) -> bool:
    """Whether the policies selecting ``pod`` admit ``peer`` in ``direction`` (Ingress/Egress)."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and _matches(p["spec"].get("podSelector"), pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True  # not isolated in this direction
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(p, namespace, peer) for p in peers):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, destination, port, protocol) for p in ports):
                continue
            return True
    return False


def allowed(
    policies: list[dict[str, Any]], source: Pod, destination: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """Whether ``source`` may connect to ``destination`` on ``port`` under ``policies`` (each
    with ``metadata.namespace`` set: a policy applies only to pods of its namespace)."""
    egress = _direction_allows(policies, source, "Egress", destination, destination, port, protocol)
    ingress = _direction_allows(policies, destination, "Ingress", source, destination, port, protocol)
    return egress and ingress
