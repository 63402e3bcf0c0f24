"""OpenSIPS usrloc's working modes for the location table: restart persistency in SQL and full
sharing over the cluster link.

* :mod:`.settings` -- ``[usrloc]``: ``working_mode_preset`` / ``db_mode``, ``db_url``, ``timer_interval``.
* :mod:`.rows` -- a binding as a row of OpenSIPS's ``location`` table, and back.
* :mod:`.sqlstore` -- that table in SQLite or MySQL/MariaDB (blocking; run in a worker thread).
* :mod:`.persistence` -- :class:`Persistence`: load at start, write-back / write-through, ``ul_sync``.
* :mod:`.writethrough` -- ``WriteThroughLocation``: the registrar's saves answered once committed
  (imported only in write-through mode).
* :mod:`.replication` -- ``Replication``: full sharing (``usrloc-contact-repl``), ``ul_cluster_sync``
  (imported only when configured).
* :mod:`.wire` -- a binding on the cluster link (compact JSON), the messages, the §10.3 merge.
"""

from .persistence import Persistence
from .settings import UsrlocSettings
from .sqlstore import LocationTable, TableError, open_table

__all__ = ["Persistence", "UsrlocSettings", "LocationTable", "TableError", "open_table"]
