"""Prometheus exposition of a node's statistics (what OpenSIPS's ``prometheus`` module does over ``httpd``).

Nothing here runs on the message path. The node, the proxy core and the services keep plain
counters and :class:`~edgeproxy.latency.LatencyHistogram` s; :class:`NodeCollector` is a
prometheus-client custom collector that reads them when Prometheus scrapes
(https://prometheus.github.io/client_python/collector/custom/), so a node pays nothing for being
watched between scrapes.

What is exported, names prefixed ``<prefix>_`` (``edgeproxy_``):

* every MI statistic (:meth:`~.statistics.StatisticsCommands.statistics`), as ``<group>_<name>`` --
  a counter (``_total``) when the MI can reset it, else a gauge -- or, for the statistics that are
  one series of a group, as that group's metric with labels: ``core_rcv_requests_by_method_total
  {method="INVITE"}``, ``core_rcv_replies_by_class_total{class="2xx"}``,
  ``tm_transactions_by_class_total{class="4xx"}``. Each metric's help names its MI key;
* what a board needs beyond the MI: ``tm_transactions{side,transport}`` and
  ``net_connections{transport}`` now, ``cluster_node_up{cluster_id,node_id}`` with a cluster,
  ``dispatcher_destination_state{setid,destination,state}`` with ``[dispatcher]``, and the
  histograms ``tm_invite_setup_seconds`` (INVITE arrival to its first final response),
  ``registrar_register_duration_seconds`` (REGISTER arrival to the end of its route),
  ``auth_store_duration_seconds`` / ``auth_store_errors_total`` (subscriber table, with ``[auth]``)
  and ``federation_store_duration_seconds`` (the location store, with ``[federation]``);
* with ``process = true``, prometheus-client's ``process_*`` series (CPU seconds, resident memory,
  open and maximum file descriptors, start time).

Names follow https://prometheus.io/docs/practices/naming/ (``_total`` counters, units in names), not
OpenSIPS's bare names: OpenSIPS's module prints no ``_total`` and no units.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..latency import LatencyHistogram
from .metrics_settings import MetricsSettings
from .parts import NodeParts
from .statistics import Stat

__all__ = ["NodeCollector", "StatisticsSource", "metrics_registry", "exposition", "CONTENT_TYPE"]

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")

#: The text format 0.0.4, which every Prometheus reads (what OpenSIPS's module and ``generate_latest``
#: print: our names are ASCII, so the 1.0.0 escaping newer libraries announce changes nothing).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatisticsSource(Protocol):
    """What the collector reads the MI's statistics from (:class:`~.commands.MICommands` is one)."""

    parts: NodeParts

    def statistics(self) -> list[Stat]: ...


def metric_family(stat: Stat) -> str:
    """The metric name (after the prefix) of a statistic: its ``family``, else ``<group>_<name>``
    with OpenSIPS's rule for names (every character outside ``[A-Za-z0-9_]`` becomes ``_``)."""
    return stat.family or _NOT_NAME.sub("_", f"{stat.group}_{stat.name}")


class NodeCollector:
    """The custom collector of one node (see the module docstring)."""

    def __init__(self, source: StatisticsSource, prefix: str = "edgeproxy") -> None:
        self.source = source
        self.prefix = prefix

    def describe(self) -> list[Metric]:
        return []  # registering must not collect (the parts may not be running yet)

    def collect(self) -> Iterator[Metric]:
        yield from self._statistics()
        yield from self._now()
        yield from self._histograms()

    # -- the MI's statistics -----------------------------------------------------------------------
    def _statistics(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for stat in self.source.statistics():
            family = metric_family(stat)
            metric = families.get(family)
            if metric is None:
                name = f"{self.prefix}_{family}"
                labels = [k for k, _ in stat.labels]
                help_text = f"MI {stat.group}:{stat.name}" if not stat.labels else \
                    f"MI {stat.group}: statistics by {', '.join(labels)}"
                metric = families[family] = (CounterMetricFamily(name, help_text, labels=labels)
                                             if stat.reset is not None else
                                             GaugeMetricFamily(name, help_text, labels=labels))
            metric.add_metric([v for _, v in stat.labels], float(stat.get()))  # type: ignore[attr-defined]
        return families.values()

    # -- what is there now -------------------------------------------------------------------------
    def _now(self) -> Iterable[Metric]:
        parts = self.source.parts
        p = self.prefix
        tm = GaugeMetricFamily(f"{p}_tm_transactions", "transactions now, server and client side, by transport",
                               labels=["side", "transport"])
        for (side, transport), n in sorted(parts.node.proxy.transactions_by_transport().items()):
            tm.add_metric([side, transport], n)
        yield tm
        transports = parts.transports
        if transports is not None:
            net = GaugeMetricFamily(f"{p}_net_connections", "TCP, TLS, WS and WSS connections open now, by "
                                    "transport", labels=["transport"])
            for transport, n in sorted(transports.connections_by_transport().items()):
                net.add_metric([transport], n)
            yield net
        cluster = parts.cluster
        if cluster is not None:
            up = GaugeMetricFamily(f"{p}_cluster_node_up", "1 while the cluster link to the node is up "
                                   "(clusterer_list link_state Up)", labels=["cluster_id", "node_id"])
            for cluster_id in cluster.clusters:
                for row in cluster.nodes(cluster_id):
                    up.add_metric([str(cluster_id), str(row.node_id)],
                                  1.0 if cluster.is_up(row.node_id, cluster_id) else 0.0)
            yield up
        dispatcher = parts.dispatcher
        if dispatcher is not None:
            state = GaugeMetricFamily(f"{p}_dispatcher_destination_state", "1 for the state each dispatcher "
                                      "destination is in (ds_list: Active, Inactive, Probing), 0 for the others",
                                      labels=["setid", "destination", "state"])
            for dest in dispatcher.table.destinations():
                now = dest.state_name
                for name in ("Active", "Inactive", "Probing"):
                    state.add_metric([str(dest.setid), dest.uri, name], 1.0 if name == now else 0.0)
            yield state
            for name, value in sorted(dispatcher.stats.items()):  # state_changes, probe_failures
                counter = CounterMetricFamily(f"{p}_dispatcher_{_NOT_NAME.sub('_', name)}", f"dispatcher {name}")
                counter.add_metric([], value)
                yield counter

    # -- latencies ---------------------------------------------------------------------------------
    def _histograms(self) -> Iterable[Metric]:
        parts = self.source.parts
        node = parts.node
        p = self.prefix
        yield _histogram(f"{p}_tm_invite_setup_seconds", "INVITE arrival to its first final response sent "
                         "(post-dial delay and ringing)", node.proxy.setup_time)
        yield _histogram(f"{p}_registrar_register_duration_seconds", "REGISTER arrival to the end of its "
                         "route (save, authentication)", node.register_time)
        auth = node.auth
        if auth is not None:
            yield _histogram(f"{p}_auth_store_duration_seconds", "subscriber lookups ([auth] table or "
                             "users), answered or failed", auth.store_latency)
            errors = CounterMetricFamily(f"{p}_auth_store_errors", "subscriber lookups that failed "
                                         "(unreachable, timeout)")
            errors.add_metric([], auth.store_errors)
            yield errors
        federation = parts.federation
        store = federation.store if federation is not None else None
        latency = getattr(store, "latency", None)
        if isinstance(latency, LatencyHistogram):
            yield _histogram(f"{p}_federation_store_duration_seconds", "location store operations, "
                             "dispatch to completion", latency)


def _histogram(name: str, help_text: str, histogram: LatencyHistogram) -> Metric:
    metric = HistogramMetricFamily(name, help_text)
    metric.add_metric([], [(le, float(n)) for le, n in histogram.cumulative()], histogram.sum)
    return metric


def metrics_registry(source: StatisticsSource, settings: MetricsSettings) -> CollectorRegistry:
    """A registry of its own for one node (never the library's global one: several nodes may run in
    one process, in tests): the node's collector and, with ``process``, the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(source, settings.prefix))
    if settings.process:
        ProcessCollector(registry=registry)
    return registry


def exposition(registry: Any) -> bytes:
    """The text exposition format (``Content-Type:`` :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
