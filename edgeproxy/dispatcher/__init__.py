"""Destination sets with selection, failover and probing: OpenSIPS's ``dispatcher`` module.

* :mod:`.table` -- :class:`Destination`, :class:`DestinationSet`, the rows of OpenSIPS's
  ``dispatcher`` table and their state bits (pure).
* :mod:`.select` -- ``ds_select_dst``'s algorithms, OpenSIPS's hash and flags (pure).
* :mod:`.settings` -- the ``[dispatcher]`` section.
* :mod:`.service` -- :class:`Dispatcher`: the node's sets, ``ds_reload``, every state change.
* :mod:`.prober` -- :class:`Prober`: OPTIONS probes every ``ds_ping_interval``.
* :mod:`.db` -- reading the ``dispatcher`` table from MySQL/MariaDB.

The route verbs (``ds_select_dst``, ``ds_next_dst``, ``ds_mark_dst``, ``ds_is_in_list``,
``ds_count``) are :mod:`edgeproxy.routing.verbs`'; the MI commands (``ds_list``, ``ds_set_state``,
``ds_reload``) :mod:`edgeproxy.management.dispatcher`'s.
"""

from .select import ALGORITHMS, Flags, Selection, ds_hash, parse_flags, select, uri_hash_keys
from .service import Dispatcher, StateListener
from .settings import DispatcherSettings
from .table import (
    INACTIVE,
    PROBING,
    Destination,
    DestinationSet,
    DispatcherTable,
    RowError,
    build_table,
    destination_from_row,
    parse_state_letter,
)

__all__ = [
    "ALGORITHMS", "Flags", "Selection", "ds_hash", "parse_flags", "select", "uri_hash_keys",
    "Dispatcher", "StateListener", "DispatcherSettings",
    "INACTIVE", "PROBING", "Destination", "DestinationSet", "DispatcherTable", "RowError", "build_table",
    "destination_from_row", "parse_state_letter",
]
