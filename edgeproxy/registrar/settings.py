"""Registrar policy knobs (OpenSIPS ``registrar`` module parameters and ``save()`` flags), and the
``[registrar]`` table of the configuration that sets them (:data:`SECTION`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from ..config_error import ConfigError
from ..config_schema import Section, boolean, choice, integer
from ..sip.uri import SipURI

__all__ = ["RegistrarSettings", "aor_of", "MIN_EXPIRES_MODES", "PATH_MODES", "SECTION"]

MIN_EXPIRES_MODES = ("clamp", "reject")
PATH_MODES = ("ignore", "off", "lazy", "strict")


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """How the registrar treats REGISTER requests.

    * ``default_expires`` (3600) — binding lifetime when neither the Contact ``expires`` parameter nor an
      Expires header gives one, or when the given value is unusable (RFC 3261 §10.3 step 7; RFC 4475
      §3.1.2.4; OpenSIPS ``default_expires``).
    * ``min_expires`` (60, 0 = off) — shortest lifetime accepted. ``min_expires_mode`` ``"clamp"`` raises
      shorter requests to it silently (OpenSIPS, which never sends 423); ``"reject"`` answers 423 Interval
      Too Brief with ``Min-Expires`` (RFC 3261 §10.3 step 7 / §20.23; Kamailio ``min_expires_mode=1``),
      which JsSIP and SIP.js honour by retrying with the larger value.
    * ``max_expires`` (0 = no limit) — longer lifetimes are lowered to it (OpenSIPS ``max_expires``).
    * ``max_contacts`` (10; 0 = unlimited, only when written) — bindings per AoR; a REGISTER that would
      leave more is refused with 503 "Too many registered contacts" and changes nothing (OpenSIPS
      ``max_contacts``, whose default 0 lets one account fork an INVITE to thousands of contacts: issue
      16 saw 2,528 contacts turn one unauthenticated INVITE into 17,700 datagrams);
      ``retry_after`` (0 = none) adds a Retry-After header to that 503 (OpenSIPS ``retry_after``).
    * ``use_domain`` (False) — whether the AoR key includes the domain (OpenSIPS usrloc ``use_domain``;
      federation requires it).
    * ``path_mode`` (``"lazy"``) — RFC 3327 Path handling, as OpenSIPS's ``save()`` path flags:
      ``"ignore"`` (OpenSIPS with no path flag) does not store Path; ``"off"`` (``path-off``/``p0``)
      stores and uses it but never returns it; ``"lazy"`` (``p1``) also returns it in the 200 OK when the
      UA sent ``Supported: path``; ``"strict"`` (``p2``, what RFC 3327 §5.3 recommends) rejects a REGISTER
      with Path from a UA without ``Supported: path`` with 420 and ``Unsupported: path``.
    * ``cseq_delay`` (20 s) — a REGISTER with the Call-ID and CSeq of a stored binding written less than
      this long ago is a retransmission: 200 with the current bindings, nothing changed. Later, an equal
      CSeq is accepted as a new update (OpenSIPS ``cseq_delay`` and ``allow_dup_cseq``, whose default lets
      UAs that reuse a CSeq keep refreshing). A lower CSeq in the same Call-ID is always 400 "Invalid
      CSeq" (RFC 3261 §10.3 step 7).
    * ``received_param`` (``"received"``) — name of the Contact parameter carrying the source address
      of NATed bindings in the 200 OK (OpenSIPS ``received_param``).
    * ``outbound`` (True) — RFC 5626 §6 outbound processing: a REGISTER with ``Supported: outbound``
      and a Contact with ``+sip.instance`` and ``reg-id`` that reached this node directly (one Via)
      or through an edge proxy that marked its Path ``;ob`` keeps one binding per (instance, reg-id)
      flow, and its 200 OK carries ``Require: outbound`` (and ``Flow-Timer``). Otherwise ``reg-id``
      is ignored, as the RFC asks, and the REGISTER is still accepted (OpenSIPS never answers 439).
    * ``flow_timer`` (0 = none) — seconds, sent as ``Flow-Timer`` in the 200 OK of outbound
      registrations: how often the UA should send its keep-alive (RFC 5626 §4.4.1). Keep it below
      the transports' idle timeout so quiet TCP/TLS flows are not closed under the UA.
    * ``max_username_len`` (64), ``max_domain_len`` (64), ``max_aor_len`` (256), ``max_contact_len``
      (255), ``max_callid_len`` (255) -- longest To (or ``aor``) user part, host part, user+host+1,
      Contact URI and Call-ID a REGISTER may carry; beyond them it is refused with 400 (reason
      "Address Of Record too long", "Contact/received too long", "Callid too long") and nothing is
      stored. OpenSIPS's registrar checks the same (``lib/reg/config.h`` ``USERNAME_MAX_SIZE``,
      ``DOMAIN_MAX_SIZE``, ``MAX_AOR_LEN``, ``CONTACT_MAX_SIZE``, ``CALLID_MAX_SIZE``; rerrno
      ``R_AOR_LEN``, ``R_CONTACT_LEN``, ``R_CALLID_LEN``) because they are the widths of usrloc's
      ``location`` columns: a longer value could not be persisted (``usrloc.rows.fits``). Raising
      them above those widths needs wider columns.
    """

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 0
    min_expires_mode: str = "clamp"
    max_contacts: int = 10
    retry_after: int = 0
    use_domain: bool = False
    path_mode: str = "lazy"
    received_param: str = "received"
    cseq_delay: float = 20.0
    outbound: bool = True
    flow_timer: int = 0
    max_username_len: int = 64
    max_domain_len: int = 64
    max_aor_len: int = 256
    max_contact_len: int = 255
    max_callid_len: int = 255

    def __post_init__(self) -> None:
        if self.min_expires_mode not in MIN_EXPIRES_MODES:
            raise ValueError(f"min_expires_mode must be one of {MIN_EXPIRES_MODES}, not {self.min_expires_mode!r}")
        if self.path_mode not in PATH_MODES:
            raise ValueError(f"path_mode must be one of {PATH_MODES}, not {self.path_mode!r}")
        for name in ("default_expires", "min_expires", "max_expires", "max_contacts", "retry_after", "cseq_delay",
                     "flow_timer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.default_expires == 0:
            raise ValueError("default_expires must be positive")
        for name in _LENGTHS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


_LENGTHS = ("max_username_len", "max_domain_len", "max_aor_len", "max_contact_len", "max_callid_len")


def _min_not_above_max(settings: RegistrarSettings) -> None:
    if settings.max_expires and settings.min_expires > settings.max_expires:
        raise ConfigError("registrar.min_expires",
                          f"must be <= registrar.max_expires ({settings.max_expires}), got {settings.min_expires}")


#: The ``[registrar]`` table: its keys (``retry_after``, ``received_param`` and ``cseq_delay`` are
#: not among them) and their checks.
SECTION: Section[RegistrarSettings] = Section(RegistrarSettings, {
    "default_expires": integer(1),
    "min_expires": integer(0),
    "max_expires": integer(0),
    "min_expires_mode": choice(*MIN_EXPIRES_MODES),
    "max_contacts": integer(0),
    "use_domain": boolean,
    "path_mode": choice(*PATH_MODES),
    "outbound": boolean,
    "flow_timer": integer(0),
    **{name: integer(1) for name in _LENGTHS},
}, after=_min_not_above_max)


def aor_of(uri: SipURI, use_domain: bool) -> str:
    """The canonical address-of-record key for ``uri`` (RFC 3261 §10.3 step 5; the OpenSIPS usrloc key).

    The user part is unescaped (``%61lice`` is ``alice``, as §19.1.4 compares them) and kept
    case-sensitive (OpenSIPS ``case_sensitive=1``, the default, "as RFC 3261 instructs"); the host is
    lower-cased. ``use_domain`` gives ``user@host``, otherwise just ``user``. A URI without a user part
    keys on its host. Scheme, port and parameters are not part of the AoR.
    """
    host = uri.host.lower()
    user = uri.user
    if not user:
        return host
    if "%" in user:
        user = unquote(user, errors="surrogateescape")
    return f"{user}@{host}" if use_domain else user
