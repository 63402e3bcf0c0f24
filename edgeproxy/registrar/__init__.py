"""The registrar (RFC 3261 §10.3; OpenSIPS ``registrar`` module ``save()``).

* :class:`RegistrarSettings` — expiry limits, max contacts, Path mode, AoR rules.
* :func:`aor_of` — the canonical AoR key shared by ``save()`` and ``lookup()``.
* :class:`Registrar` — turns a REGISTER into binding updates and the reply.
* :func:`binding_destination` — where a request for a binding goes (re-exported from
  :mod:`edgeproxy.location`, where it lives next to :class:`~edgeproxy.location.Binding`).
"""

from ..location.destination import binding_destination
from .registrar import Registrar, contact_value, format_q, received_uri
from .settings import MIN_EXPIRES_MODES, PATH_MODES, RegistrarSettings, aor_of

__all__ = [
    "Registrar", "RegistrarSettings", "aor_of", "binding_destination", "contact_value", "format_q", "received_uri",
    "MIN_EXPIRES_MODES", "PATH_MODES",
]
