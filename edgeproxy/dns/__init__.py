"""RFC 3263 server location without I/O: the questions to ask the DNS for a next hop named by a host
name, the RFC 2782 ordering of the answers, an answer cache bounded by TTL and size, the hosts file
and the ``[dns]`` settings.

Layering: this package imports only :mod:`edgeproxy.sip` (and the configuration error); the proxy
builds a :class:`ServerQuery` from a URI, and the Twisted glue (``edgeproxy.transport.locator``)
fetches the answers with ``twisted.names`` and runs :func:`locate`.
"""

from .cache import MAX_TTL, AnswerCache
from .hosts import parse_hosts
from .records import AAAA, NAPTR, SRV, A, Answer, Naptr, Question, Srv
from .rfc3263 import MAX_TARGETS, ServerQuery, is_host_name, locate, order_srv, select_naptr, srv_name
from .settings import DnsSettings, parse_dns_server

__all__ = [
    "A", "AAAA", "NAPTR", "SRV", "Answer", "AnswerCache", "DnsSettings", "MAX_TARGETS", "MAX_TTL", "Naptr",
    "Question", "ServerQuery", "Srv", "is_host_name", "parse_dns_server", "locate", "order_srv", "parse_hosts",
    "select_naptr", "srv_name",
]
