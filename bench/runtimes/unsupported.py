"""Runtimes users ask for that bench cannot offer on a Debian 12 host, and why (`bench doctor`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unsupported:
    name: str
    reason: str


UNSUPPORTED = (
    Unsupported(
        "kubernetes",
        "no kubelet, kubeadm, k3s or kube-apiserver package in Debian 12 or any registry bench "
        "may use (Debian has kubernetes-client and etcd-server only); without a node there is "
        "no pod to measure, and bench does not stand one in",
    ),
    Unsupported(
        "cri-o",
        "not packaged in Debian 12 (its containers would be runc under conmon, as podman's)",
    ),
    Unsupported("pouch", "not packaged in Debian 12"),
)
