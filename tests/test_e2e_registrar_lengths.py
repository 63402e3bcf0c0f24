"""Over-long REGISTERs over a real UDP socket against a real ``twistd edgeproxy``: refused with
OpenSIPS's registrar error text (rerrno R_CALLID_LEN, R_AOR_LEN) before anything is stored, while a
normal REGISTER still gets its 200 -- see tests/test_registrar_lengths.py for the sans-IO cases."""

from __future__ import annotations

from pathlib import Path

from support.raw_sip import RawUA, register_text, status
from support.sipp_harness import LOOPBACK, edgeproxy_node, require_sipp


def reason(reply: str) -> str:
    return reply.split("\r\n", 1)[0].split(" ", 2)[2]


def test_overlong_callid_and_username_get_400_and_a_normal_register_200(tmp_path: Path) -> None:
    require_sipp()
    with edgeproxy_node(tmp_path, transports=("udp",)) as node:
        ua = RawUA(node)
        try:
            contact = f"<sip:len@{LOOPBACK}:{ua.port}>"
            long_callid = ua.request(register_text("len", ua.port, call_id="c" * 300, cseq=1, contact=contact))
            long_user = "u" * 70
            long_aor = ua.request(register_text(long_user, ua.port, call_id="long-user", cseq=1,
                                                contact=f"<sip:{long_user}@{LOOPBACK}:{ua.port}>"))
            normal = ua.request(register_text("len", ua.port, call_id="normal", cseq=1, contact=contact))
            query = ua.request(register_text("len", ua.port, call_id="query", cseq=1, expires=None))
        finally:
            ua.close()
    assert (status(long_callid), reason(long_callid)) == (400, "Callid too long"), long_callid
    assert (status(long_aor), reason(long_aor)) == (400, "Address Of Record too long"), long_aor
    assert status(normal) == 200, normal
    # the refused REGISTER stored nothing: only the normal one's binding is listed
    assert status(query) == 200 and query.count("\r\nContact: ") == 1 and contact in query, query
