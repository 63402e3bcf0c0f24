"""Phones behind NAT across the federated topology (issue 11): the two nodes, the store and the
SIPp roles of ``test_e2e_cluster.py``, with phones behind a stand-in NAT.

A "NATed" phone is a SIPp agent on 127.0.0.31 or .32 (its public NAT address) whose Via, Contact
and SDP name 127.0.0.99:<port>, standing for its private address: nothing listens there, and a
request sent there is lost. The nodes run ``routes/federated.py`` with no NAT setting. Every wait is
bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import re
from pathlib import Path

from support.phones import natted
from support.polling import wait_until
from support.sipp_harness import Sipp, free_port
from test_e2e_cluster import (  # noqa: F401  (target, collection, cluster: fixtures used by name)
    DOMAIN,
    FREESWITCH_IP,
    PHONE_IPS,
    X_IP,
    Y_IP,
    Cluster,
    cluster,
    collection,
    freeswitch,
    node_config,
    records_for,
    start_federated,
    target,
    wait_peers_up,
)


def requests(messages: list) -> list[str]:
    return [m.first_line.split(" ")[0] for m in messages if not m.first_line.startswith("SIP/")]


def test_federated_call_to_a_natted_phone_every_request_reaches_it(cluster: Cluster, target, collection,
                                                                   tmp_path: Path) -> None:
    """A phone behind a (stand-in) NAT on X is called by FreeSWITCH through Y; FreeSWITCH's ACK,
    re-INVITE and BYE pop Y's entry, then X's, whose UDP flow token brings them to the phone's real
    socket, and the phone's own re-INVITE goes back through X and Y."""
    x, y = start_federated(cluster, target, collection)
    phone_sipp = Sipp(tmp_path / "nat-phone", "udp", local_ip=PHONE_IPS[0])
    nat_phone = phone_sipp.start("nat_register", x.address, user="natty", ooc="call_uas", duration_ms=60_000,
                                 timeout=70, keys={"domain": DOMAIN, **natted(port=5099), "answer_host": "127.0.0.99",
                                                   "answer_port": 5099, "hangup": "caller"})
    try:
        nat_phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        wait_until("natty's record", lambda: records_for(target, collection, "natty"))
        result = freeswitch(tmp_path).run("call_uac", y.address, user="natty", duration_ms=200, timeout=20,
                                          keys={"domain": DOMAIN, "hangup": "caller"})
    finally:
        phone_result = nat_phone.stop()
    assert result.ok, result.describe()
    assert requests(phone_result.received()) == ["INVITE", "ACK", "INVITE", "ACK", "BYE"], phone_result.describe()


def test_natted_phone_on_x_calls_natted_phone_on_y_through_freeswitch(cluster: Cluster, target, collection,
                                                                      tmp_path: Path) -> None:
    """NATed phone to NATed phone through both nodes, routed as the seed routes it: a phone's call
    goes to FreeSWITCH (``to_freeswitch``), and FreeSWITCH -- a B2BUA -- calls the callee through the
    federation. Alice (NATed, registered on X) calls bob; X sends it to FreeSWITCH, which answers
    her leg and places bob's leg on X, whose global lookup finds bob's home Y; Y relays to bob
    (NATed, registered on Y). Every in-dialog request of both legs, both ways, reaches the real
    sockets: FreeSWITCH's re-INVITE to alice (X's flow token), alice's re-INVITE and BYE to
    FreeSWITCH, FreeSWITCH's ACK and re-INVITE to bob (Y's flow token behind X's entry), bob's
    re-INVITE and BYE back through Y and X."""
    fs_port = free_port(FREESWITCH_IP)
    url = target.url(collection)
    configs = {}
    for name, ip, node_id in (("X", X_IP, 1), ("Y", Y_IP, 2)):
        config = node_config("federated", ip, node_id, store_url=url, collection=collection)
        config["route_params"]["freeswitch"] = [f"{FREESWITCH_IP}:{fs_port}"]  # where its UAS listens
        configs[name] = config
    x, y = cluster.start("X", X_IP, configs["X"]), cluster.start("Y", Y_IP, configs["Y"])
    wait_peers_up(x, y)

    bob = Sipp(tmp_path / "bob", "udp", local_ip=PHONE_IPS[1]).start(
        "nat_register", y.address, user="bob", ooc="call_uas", duration_ms=60_000, timeout=70,
        keys={"domain": DOMAIN, **natted(port=5099), "answer_host": "127.0.0.99", "answer_port": 5097,
              "hangup": "callee"})
    fs_a_leg = None
    try:
        bob.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        wait_until("bob's record", lambda: records_for(target, collection, "bob"))
        # alice registers on X and calls from the same socket, as a phone does
        alice_port = free_port(PHONE_IPS[0])
        alice_sipp = Sipp(tmp_path / "alice", "udp", local_ip=PHONE_IPS[0])
        alice_sipp.run("nat_register", x.address, user="alice", port=alice_port, duration_ms=0, timeout=10,
                       keys={"domain": DOMAIN, **natted(port=5098)}).assert_ok()
        fs_a_leg = Sipp(tmp_path / "fs-a-leg", "udp", local_ip=FREESWITCH_IP).start(
            "call_uas", port=fs_port, user="bob", timeout=30, keys={"hangup": "caller"})
        alice = alice_sipp.start("call_uac", x.address, user="bob", port=alice_port, duration_ms=4_000, timeout=30,
                                 keys={"domain": DOMAIN, "caller": "alice", "hangup": "caller", **natted(port=5098)})
        fs_a_leg.wait_for_message(r"^INVITE sip:bob@", timeout=10)  # her call reached FreeSWITCH via X
        # the bridge: FreeSWITCH calls bob on X (the node that sent it the call); bob hangs up
        b_leg = freeswitch(tmp_path).run("call_uac", x.address, user="bob", timeout=20,
                                         keys={"domain": DOMAIN, "caller": "alice", "hangup": "callee"})
        alice_result = alice.wait(30)
        fs_a_result = fs_a_leg.wait(30)
    finally:
        bob_result = bob.stop()
        if fs_a_leg is not None:
            fs_a_leg.stop()

    # alice's leg: FreeSWITCH's re-INVITE and its ACK reached her; her re-INVITE and BYE reached it
    alice_result.assert_ok()
    assert requests(alice_result.received()) == ["INVITE", "ACK"], alice_result.describe()
    assert requests(fs_a_result.received()) == ["INVITE", "ACK", "INVITE", "ACK", "BYE"], fs_a_result.describe()
    assert fs_a_result.failed_calls == 0, fs_a_result.describe()
    # bob's leg: INVITE via X then Y, FreeSWITCH's ACK and re-INVITE to him; his re-INVITE and BYE back
    assert b_leg.ok, b_leg.describe()
    bob_requests = [m for m in bob_result.received() if not m.first_line.startswith("SIP/")]
    assert [m.method for m in bob_requests] == ["INVITE", "ACK", "INVITE", "ACK"], bob_result.describe()
    # Y's entry carries bob's UDP flow token in its user part, X's none (FreeSWITCH is not NATed)
    record_route = ",".join(bob_requests[0].header("Record-Route"))
    assert re.findall(r"<sip:(?:[^@>]*@)?([0-9.]+)[:;>]", record_route) == [Y_IP, X_IP], record_route
    assert re.match(r"<sip:[^@>]+@127\.0\.0\.12[:;>]", record_route), record_route
    assert requests(b_leg.received()) == ["INVITE", "ACK", "BYE"], b_leg.describe()
    assert bob_result.failed_calls == 0, bob_result.describe()
