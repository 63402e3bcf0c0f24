"""The dispatcher's route verbs (OpenSIPS ``dispatcher``): ``ds_select_dst`` / ``ds_select_domain``,
``ds_next_dst`` / ``ds_next_domain``, ``ds_mark_dst``, ``ds_is_in_list``, ``ds_count`` -- a part of
:class:`~edgeproxy.routing.verbs.RouteVerbs`, so the node and
:class:`~edgeproxy.routing.testing.RouteHarness` run them alike. The choice itself is
:func:`edgeproxy.dispatcher.select`'s (pure); a destination's state changes go through
:meth:`edgeproxy.dispatcher.Dispatcher.set_state` (logged, counted, shared with the cluster).
"""

from __future__ import annotations

from twisted.logger import Logger

from ..dispatcher import (
    Destination,
    Dispatcher,
    Selection,
    ds_hash,
    parse_flags,
    parse_state_letter,
    select,
    uri_hash_keys,
)
from ..proxy.context import RouteState
from ..proxy.settings import ProxySettings
from ..sip.address import ip_literal
from ..sip.message import Request
from ..sip.uri import SipURI
from .part import RequestPart

__all__ = ["DispatcherVerbs", "DispatcherRequest"]

log = Logger(namespace="edgeproxy.proxy")
#: ds_count's filter: a state letter (:func:`parse_state_letter`) -> :attr:`Destination.state_name`
_STATE_NAMES = {"a": "Active", "i": "Inactive", "p": "Probing"}


class DispatcherVerbs:
    """The ``ds_*`` verbs over a request's :class:`RouteState` and the node's dispatcher (None
    without ``[dispatcher]``: the verbs then raise, a route error)."""

    dispatcher: Dispatcher | None
    settings: ProxySettings

    def _ds(self) -> Dispatcher:
        if self.dispatcher is None:
            raise RuntimeError("the route uses the dispatcher, but the node has no [dispatcher] section")
        return self.dispatcher

    def ds_select_dst(self, route: RouteState, setid: int, alg: int, flags: str, max_results: int,
                      domain: bool = False) -> int:
        """OpenSIPS ``ds_select_dst``: ``$du`` becomes the chosen destination of set ``setid``
        (:func:`edgeproxy.dispatcher.select`); with ``f`` the other usable ones follow it for
        ``ds_next_dst``, with ``a`` ahead of an earlier call's list. 1, or -1 when the set is unknown
        or empty, nothing in it is active, or the algorithm's input is missing (OpenSIPS's -1).
        ``domain``: ``ds_select_domain``, the Request-URI's host and port become the destination's
        instead of ``$du``."""
        ds = self._ds()
        fl = parse_flags(flags)
        dset = ds.table.get(setid)
        if dset is None or not dset.destinations:
            log.info("ds_select_dst: set {setid} is unknown or empty", setid=setid)
            return -1
        chosen = select(dset, alg, fl, self._ds_hash_value(route.request, alg, fl.user_only), ds.rand, max_results)
        if chosen is None:
            if self.settings.log_decisions:
                log.debug("ds_select_dst: no usable destination in set {setid} (alg {alg})", setid=setid, alg=alg)
            return -1
        dest = chosen[0]
        if not self._ds_apply(route, dest, domain):
            return -1
        dest.first_hit_counter += 1
        ds.stats["selections"] += 1
        earlier = route.ds.destinations if route.ds is not None and fl.append else []
        route.ds = Selection(setid, (chosen if fl.failover else [dest]) + earlier)
        return 1

    @staticmethod
    def _ds_hash_value(request: Request, alg: int, user_only: bool) -> int | None:
        """The hash the algorithm needs from the request (None: its input is missing)."""
        if alg == 0:
            call_id = request.call_id.strip()
            return ds_hash(call_id) if call_id else None
        if alg in (1, 2, 3):
            uri = (request.from_.uri, request.to.uri, request.uri)[alg - 1]
            if not isinstance(uri, SipURI):
                return None
            return ds_hash(*uri_hash_keys(uri, user_only))
        if alg == 5:
            for name in ("proxy-authorization", "authorization"):
                for creds in request.credentials(name):
                    username = creds.params.get("username")
                    if username:
                        return ds_hash(username)
            return None
        return None

    @staticmethod
    def _ds_apply(route: RouteState, dest: Destination, domain: bool) -> bool:
        """Point the request at ``dest``: ``$du`` (``ds_*_dst``), or the Request-URI's host and port
        (``ds_*_domain``; False for a Request-URI that is no SIP URI)."""
        if not domain:
            route.dst_uri = dest.dst_uri
            return True
        ruri = route.request.uri
        if not isinstance(ruri, SipURI):
            return False
        route.request.uri = ruri.replace(host=dest.dst_uri.host, port=dest.dst_uri.port)
        route.ruri_changed = True
        route.ruri_branch = None
        return True

    def ds_next_dst(self, route: RouteState, domain: bool = False) -> int:
        """OpenSIPS ``ds_next_dst`` (``ds_next_domain`` with ``domain``): the destination just tried
        leaves the failover list and ``$du`` (the Request-URI's host) becomes the next one; -1 when
        none is left."""
        ds = self._ds()
        sel = route.ds
        if sel is None or not sel.destinations:
            return -1
        sel.destinations.pop(0)
        dest = sel.current
        if dest is None or not self._ds_apply(route, dest, domain):
            return -1
        ds.stats["failovers"] += 1
        return 1

    def ds_mark_dst(self, route: RouteState, state: str | int) -> int:
        """OpenSIPS ``ds_mark_dst``: set the state of the destination last tried (``i`` inactive, ``a``
        active, ``p`` probing, with ``ds_probing_threshold``); 1, or -1 when there is none."""
        ds = self._ds()
        letter = parse_state_letter(state)
        dest = route.ds.current if route.ds is not None else None
        if dest is None:
            return -1
        ds.set_state(dest, letter, f"ds_mark_dst(\"{letter}\") for {route.request.call_id}")
        return 1

    def ds_is_in_list(self, ip: str, port: int, setid: int, active_only: bool) -> bool:
        """OpenSIPS ``ds_is_in_list``: ``ip`` is an address of a destination of ``setid`` (-1: any
        set) and ``port`` its port (0 on either side: any port)."""
        ds = self._ds()
        literal = ip_literal(ip)
        if literal is None:
            return False
        address = literal[1]
        sets = ds.table.sets.values() if setid == -1 else [s for s in (ds.table.get(setid),) if s is not None]
        for dset in sets:
            for d in dset.destinations:
                if address in d.addresses and (not port or not d.port or port == d.port) \
                        and (d.active or not active_only):
                    return True
        return False

    def ds_count(self, setid: int, state_filter: str) -> int:
        """OpenSIPS ``ds_count``: destinations of ``setid`` in the states of ``state_filter`` (``a``
        active, ``i`` inactive, ``p`` probing, any combination; empty: all); -1 for an unknown set."""
        dset = self._ds().table.get(setid)
        if dset is None:
            return -1
        wanted = set()
        for c in str(state_filter):
            try:
                wanted.add(_STATE_NAMES[parse_state_letter(c)])
            except ValueError:
                continue  # OpenSIPS ignores the filter's unknown characters
        if not wanted:
            return len(dset.destinations)
        return sum(1 for d in dset.destinations if d.state_name in wanted)


class DispatcherRequest(RequestPart):
    """``msg``'s ``ds_*`` functions (a part of :class:`~edgeproxy.routing.api.RouteRequest`)."""

    __slots__ = ()

    def ds_select_dst(self, set: int, alg: int, flags: str = "", max_results: int = 1000) -> int:  # noqa: A002
        """OpenSIPS ``ds_select_dst(set, alg, flags)``: ``$du`` becomes a destination of ``set`` chosen
        by ``alg`` (0-3 hash over Call-ID, From, To, Request-URI; 4 round robin; 5 auth username; 6
        random; 8 first by priority; weights apply); flags ``f`` (keep the others for
        :meth:`ds_next_dst`), ``u``, ``d``, ``a``. 1, or -1 when nothing can be chosen (unknown or
        empty set, nothing active)."""
        return self._verbs.ds_select_dst(self._state, set, alg, flags, max_results)

    def ds_select_domain(self, set: int, alg: int, flags: str = "", max_results: int = 1000) -> int:  # noqa: A002
        """OpenSIPS ``ds_select_domain``: :meth:`ds_select_dst`, but the Request-URI's host and port
        become the destination's (``$du`` is left alone)."""
        return self._verbs.ds_select_dst(self._state, set, alg, flags, max_results, domain=True)

    def ds_next_domain(self) -> int:
        """OpenSIPS ``ds_next_domain()``: :meth:`ds_next_dst` for :meth:`ds_select_domain`."""
        return self._verbs.ds_next_dst(self._state, domain=True)

    def ds_next_dst(self) -> int:
        """OpenSIPS ``ds_next_dst()`` (in a failure route): ``$du`` becomes the next destination of
        the list ``ds_select_dst(..., "f")`` kept; -1 when none is left."""
        return self._verbs.ds_next_dst(self._state)

    def ds_mark_dst(self, state: str = "i") -> int:
        """OpenSIPS ``ds_mark_dst(state)``: the destination tried last becomes ``i`` inactive, ``a``
        active or ``p`` probing (after ``ds_probing_threshold`` marks); -1 when there is none."""
        return self._verbs.ds_mark_dst(self._state, state)

    def ds_is_in_list(self, ip: str | None = None, port: int = 0, set: int = -1,  # noqa: A002
                      active_only: bool = False) -> bool:
        """OpenSIPS ``ds_is_in_list(ip, port, set)``: ``ip`` (default ``$si``) and ``port`` (0: any)
        are a destination of ``set`` (-1: any set)."""
        return self._verbs.ds_is_in_list(self._state.source.remote.host if ip is None else ip, port, set,
                                         active_only)

    def ds_count(self, set: int, state_filter: str = "") -> int:  # noqa: A002
        """OpenSIPS ``ds_count(set, filter)``: how many destinations of ``set`` are in the states of
        ``filter`` (``a``, ``i``, ``p``; "" all); -1 when the set does not exist."""
        return self._verbs.ds_count(set, state_filter)

    @property
    def ds_enabled(self) -> bool:
        """Whether the node has a ``[dispatcher]`` section (the ``ds_*`` verbs raise without one)."""
        return self._verbs.dispatcher is not None

    @property
    def ds_attrs(self) -> str | None:
        """The ``attrs`` of the destination ``$du`` points at after ``ds_select_dst`` /
        ``ds_next_dst`` (OpenSIPS ``attrs_avp``); None before."""
        sel = self._state.ds
        dest = sel.current if sel is not None else None
        return dest.attrs if dest is not None else None
