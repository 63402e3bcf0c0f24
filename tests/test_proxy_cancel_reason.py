"""The RFC 3326 Reason of the CANCELs the proxy sends its branches, as OpenSIPS's ``tm`` writes them,
on the socket-less node of ``test_proxy_node``:

* a branch that rang and timed out (Timer C, ``$T_fr_inv_timeout``): ``SIP;cause=480;text="NO_ANSWER"``
  (``timer.c: final_response_handler``);
* the other branches of an INVITE answered 2xx: ``SIP ;cause=200 ;text="Call completed elsewhere"``
  (``t_cancel.h: CANCEL_REASON_200``); none after a 6xx;
* a received CANCEL: its own Reason lines passed on (``t_relay`` flag ``pass-reason-hdr``, here
  ``[proxy] pass_cancel_reason``, on by default) when well formed, else
  ``SIP;cause=487;text="ORIGINATOR_CANCEL"`` (``t_fwd.c: get_cancel_reason``);
* a CANCEL held until the branch's first provisional keeps the Reason it was asked with;
* ``dlg_end_dlg`` on an early dialog: the MI's extra headers (``t_cancel_trans``).
"""

from __future__ import annotations

import pytest
from support.proxy import (
    ALICE_FLOW,
    BOB,
    BOB_FLOW,
    World,
    answer,
    cancel,
    invite,
    module,
    only,
    requests,
)

from edgeproxy.dialog import DialogTable
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.transaction import TimerSettings

BOB2 = Endpoint("UDP", "192.0.2.11", 5064)
BOB2_FLOW = Flow(ALICE_FLOW.local, BOB2)


def call(w: World, *contacts: str) -> dict[Endpoint, object]:
    w.register(contacts=contacts or ("<sip:bob@192.0.2.10:5062>",))
    return {s.remote: s.message for s in requests(w.receive(invite(), ALICE_FLOW), "INVITE")}


def reasons(sent) -> list[list[str]]:
    return [s.message.headers.get_all("reason") for s in sent if s.is_request("CANCEL")]


def cancel_with(*reason_lines: str) -> str:
    return cancel().replace("CSeq: 1 CANCEL", "CSeq: 1 CANCEL" + "".join(f"\r\nReason: {r}" for r in reason_lines))


def test_timer_c_cancel_says_no_answer_as_opensips() -> None:
    w = World(timers=TimerSettings(timer_c=10))
    fwd = call(w)[BOB]
    w.receive(answer(fwd, 180), BOB_FLOW)
    sent = w.advance(10.1)
    assert reasons(sent) == [['SIP;cause=480;text="NO_ANSWER"']]
    assert only(sent, lambda s: s.is_response()).is_response(408)


def test_fr_inv_timeout_of_the_route_cancels_with_no_answer() -> None:
    def route(msg):
        msg.T_fr_inv_timeout = 2
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(route))
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.receive(answer(fwd, 183), BOB_FLOW)
    assert reasons(w.advance(2.1)) == [['SIP;cause=480;text="NO_ANSWER"']]


def test_the_losers_of_a_2xx_are_cancelled_as_completed_elsewhere() -> None:
    w = World()
    out = call(w, "<sip:bob@192.0.2.10:5062>;q=0.5", "<sip:bob@192.0.2.11:5064>;q=0.5")
    w.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    sent = w.receive(answer(out[BOB], 200), BOB_FLOW)
    assert reasons(sent) == [['SIP ;cause=200 ;text="Call completed elsewhere"']]


def test_the_losers_of_a_6xx_are_cancelled_without_a_reason() -> None:
    w = World()
    out = call(w, "<sip:bob@192.0.2.10:5062>;q=0.5", "<sip:bob@192.0.2.11:5064>;q=0.5")
    w.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    sent = w.receive(answer(out[BOB], 603), BOB_FLOW)
    assert reasons(sent) == [[]]


@pytest.mark.parametrize("lines", [
    ['SIP;cause=200;text="Call completed elsewhere"'],
    ['Q.850;cause=16;text="Terminated"', 'SIP ; cause=487 ; text="a, b"'],
    ['SIP;cause=600;text="Busy Everywhere", Q.850;cause=17'],
])
def test_a_received_cancels_reason_is_passed_on(lines: list[str]) -> None:
    w = World()
    fwd = call(w)[BOB]
    w.receive(answer(fwd, 180), BOB_FLOW)
    sent = w.receive(cancel_with(*lines), ALICE_FLOW)
    assert reasons(sent) == [lines]


@pytest.mark.parametrize("lines", [
    [],  # none: OpenSIPS's normal clearing
    ['SIP;cause="x"'],  # not RFC 3326: a quoted cause
    ["SIP;text=unquoted words"],
    ["SIP;text=bare"],
    ["<sip:evil>"],
    ['SIP;text="' + "x" * 300 + '"'],  # oversized
    ["SIP;cause=1"] * 5,  # too many
])
def test_a_missing_or_malformed_reason_becomes_originator_cancel(lines: list[str]) -> None:
    w = World()
    fwd = call(w)[BOB]
    w.receive(answer(fwd, 180), BOB_FLOW)
    sent = w.receive(cancel_with(*lines), ALICE_FLOW)
    assert only(sent, lambda s: s.is_response()).is_response(200)  # the CANCEL itself is honoured
    assert reasons(sent) == [['SIP;cause=487;text="ORIGINATOR_CANCEL"']]


def test_pass_cancel_reason_off_is_opensips_without_the_flag() -> None:
    w = World(settings=ProxySettings(domains=("example.com",), pass_cancel_reason=False))
    fwd = call(w)[BOB]
    w.receive(answer(fwd, 180), BOB_FLOW)
    sent = w.receive(cancel_with('SIP;cause=200;text="Call completed elsewhere"'), ALICE_FLOW)
    assert reasons(sent) == [['SIP;cause=487;text="ORIGINATOR_CANCEL"']]


def test_a_cancel_held_for_the_first_provisional_keeps_its_reason() -> None:
    w = World()
    fwd = call(w)[BOB]
    assert reasons(w.receive(cancel_with("SIP;cause=200"), ALICE_FLOW)) == []  # §9.1: not before a 1xx
    assert reasons(w.receive(answer(fwd, 180), BOB_FLOW)) == [["SIP;cause=200"]]


def test_dlg_end_dlg_of_an_early_dialog_cancels_with_the_mis_extra_headers() -> None:
    def route(msg):
        msg.create_dialog()
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    table = DialogTable()
    w = World(module(route), dialogs=table)
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.receive(answer(fwd, 180), BOB_FLOW)
    dlg = next(iter(table))
    assert w.node.proxy.dialogs.end(dlg, "MI Termination", (("Reason", 'SIP;cause=503;text="Maintenance"'),))
    sent = w.sender.take()
    assert reasons(sent) == [['SIP;cause=503;text="Maintenance"']]
