"""The sans-IO SIP core: messages, URIs, header values and framing (RFC 3261 §7, §19, §20, §25).

Nothing here performs I/O or reads a clock; transports feed bytes in and send bytes out.
"""

from .errors import SipError, SipParseError, SipValueError
from .message import Headers, Message, Request, Response, reason_phrase
from .parser import DEFAULT_LIMITS, NEED_DATA, PING, Limits, StreamParser, error_response, parse_datagram
from .uri import URI, AbsoluteURI, SipURI, TelURI, parse_uri
from .values import Credentials, CSeq, NameAddress, Via, parse_name_address, parse_via

__all__ = [
    "SipError", "SipParseError", "SipValueError",
    "Headers", "Message", "Request", "Response", "reason_phrase",
    "DEFAULT_LIMITS", "NEED_DATA", "PING", "Limits", "StreamParser", "error_response", "parse_datagram",
    "URI", "AbsoluteURI", "SipURI", "TelURI", "parse_uri",
    "CSeq", "Credentials", "NameAddress", "Via", "parse_name_address", "parse_via",
]
