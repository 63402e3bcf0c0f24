"""The usrloc commands of the MI (OpenSIPS's usrloc module): ``ul_dump``, ``ul_show_contact``,
``ul_rm``, ``ul_rm_contact`` over the node's location service, ``ul_sync`` (with SQL persistence),
and a contact as they show it (:func:`contact_json`). Removals go through the location service, so
its listeners (federation, NAT pinger) see them as any removal."""

from __future__ import annotations

from typing import Any

from ..location import Binding, InMemoryLocation
from ..registrar import format_q, received_uri
from ..usrloc.rows import ALL_METHODS, methods_mask
from .parts import NodeParts
from .rpc import MIError, invalid_params

__all__ = ["TABLE", "ALL_METHODS", "methods_mask", "contact_json", "UsrlocCommands"]

#: The one usrloc table (OpenSIPS "domain") a node has: what routes name in ``save("location")``.
TABLE = "location"

def contact_json(binding: Binding, now: float) -> dict[str, Any]:
    """One contact of ``ul_dump``/``ul_show_contact``, with OpenSIPS's keys: Contact, Expires (seconds
    left), Q, Callid, Cseq, User-agent, Received, Path, State, Flags, Cflags (``NAT``, ``SIPPING``),
    Socket (the listener it registered on), Methods (bit mask), SIP_instance (and Reg-Id)."""
    out: dict[str, Any] = {
        "Contact": str(binding.uri),
        "Expires": binding.expires_in(now),
        "Q": format_q(binding.q),
        "Callid": binding.call_id,
        "Cseq": binding.cseq,
    }
    if binding.user_agent:
        out["User-agent"] = binding.user_agent
    if binding.received is not None:
        out["Received"] = received_uri(binding.received)
    if binding.path:
        out["Path"] = ",".join(binding.path)
    out["State"] = "CS_NEW"  # OpenSIPS's state of a contact never written to a database
    out["Flags"] = 0
    out["Cflags"] = " ".join(name for name, on in (("NAT", binding.nat), ("SIPPING", binding.sipping)) if on)
    if binding.flow is not None:
        out["Socket"] = str(binding.flow.local)
    out["Methods"] = methods_mask(binding.methods)
    if binding.instance:
        out["SIP_instance"] = binding.instance
        if binding.reg_id is not None:
            out["Reg-Id"] = binding.reg_id
    return out


class UsrlocCommands:
    """The usrloc commands, over ``parts.location`` (a part of :class:`~.commands.MICommands`)."""

    parts: NodeParts

    # -- usrloc --------------------------------------------------------------------------------------
    @property
    def location(self) -> InMemoryLocation:
        return self.parts.location

    def _now(self) -> float:
        return self.location.clock.seconds()

    def _aor(self, table_name: Any, aor: Any) -> str:
        """OpenSIPS ``mi_find_domain`` + ``mi_fix_aor``: the table must be ``location``; without
        ``use_domain`` a domain is dropped, with it one is required. A ``sip:`` URI is keyed as the
        registrar keys its To URI."""
        if not isinstance(table_name, str) or not isinstance(aor, str) or not aor:
            raise invalid_params("table_name and aor must be non-empty strings")
        if table_name != TABLE:
            raise MIError(404, "Table not found")
        aor = aor.strip()
        registrar = self.parts.registrar
        if aor.lower().startswith(("sip:", "sips:")):
            from ..sip.errors import SipValueError
            from ..sip.uri import SipURI, parse_uri

            try:
                uri = parse_uri(aor)
            except SipValueError:
                raise invalid_params(f"aor {aor!r} is not a valid URI") from None
            if isinstance(uri, SipURI):
                return registrar.aor_key(uri)
        if registrar.settings.use_domain:
            if "@" not in aor:
                raise MIError(400, "Domain missing in AOR")
            user, _, host = aor.rpartition("@")
            return f"{user}@{host.lower()}"
        return aor.split("@", 1)[0]

    async def ul_dump(self, brief: Any = None) -> dict[str, Any]:
        short = brief is not None and str(brief).strip().lower() not in ("0", "false", "")
        now = self._now()
        location = self.location
        aors = []
        for aor in sorted(location.aors()):
            bindings = location.get(aor)  # the in-memory table reads synchronously: no Deferred per AoR
            if not bindings:
                continue
            entry: dict[str, Any] = {"AOR": aor}
            if not short:
                entry["Contacts"] = [contact_json(b, now) for b in bindings]
            aors.append(entry)
        return {"Domains": [{"name": TABLE, "AORs": aors}]}

    async def ul_show_contact(self, table_name: Any, aor: Any) -> dict[str, Any]:
        key = self._aor(table_name, aor)
        bindings = await self.location.contacts(key)
        if not bindings:
            raise MIError(404, "AOR not found")
        now = self._now()
        return {"AOR": key, "Contacts": [contact_json(b, now) for b in bindings]}

    async def ul_rm(self, table_name: Any, aor: Any) -> str:
        key = self._aor(table_name, aor)
        await self.location.remove(key)
        return "OK"  # as OpenSIPS: removing an AoR that is not there is no error

    async def ul_rm_contact(self, table_name: Any, aor: Any, contact: Any) -> str:
        key = self._aor(table_name, aor)
        if not isinstance(contact, str) or not contact.strip():
            raise invalid_params("contact must be a non-empty string")
        bindings = await self.location.contacts(key)
        if not bindings:
            raise MIError(404, "AOR not found")
        text = contact.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        wanted = None
        try:
            from ..sip.uri import parse_uri

            wanted = parse_uri(text)
        except Exception:  # not a URI: only an exact string can match
            wanted = None
        match = next((b for b in bindings if str(b.uri) == text or (wanted is not None and b.uri == wanted)), None)
        if match is None:
            raise MIError(404, "Contact not found")
        await self.location.remove(key, match.uri)
        return "OK"

    async def ul_sync(self, table_name: Any, aor: Any = None) -> str:
        """OpenSIPS ``ul_sync table [aor]``: write the memory table to SQL now -- the whole table (the
        SQL table is emptied and rewritten) or one AoR's contacts."""
        persistence = self.parts.persistence
        if persistence is None:
            raise MIError(400, "No SQL persistence (usrloc working mode single-instance-no-db)")
        if aor is None:
            if table_name != TABLE:
                raise MIError(404, "Table not found")
            await persistence.sync()
            return "OK"
        key = self._aor(table_name, aor)
        if not await self.location.contacts(key):
            raise MIError(404, "AOR not found")
        persistence.journal.add(key)
        await persistence.flush()
        return "OK"

    async def ul_cluster_sync(self) -> str:
        """OpenSIPS ``ul_cluster_sync``: pull the whole location table from a peer that is up (merged,
        never wiped), with ``full-sharing``."""
        replication = self.parts.replication
        if replication is None:
            raise MIError(400, "No cluster sharing (usrloc cluster_mode is not full-sharing)")
        if replication.request_sync() is None:
            raise MIError(400, "No donor: no other node of the cluster is up")
        return "OK"
