"""Choosing the response a forked request answers with (RFC 3261 §16.7 steps 6-7)."""

from __future__ import annotations

from typing import Iterable

from ..sip.message import Response

__all__ = ["best_response", "upstream_final"]

_CLASS_ORDER = {6: 0, 2: 0, 3: 1, 4: 2, 5: 3}
_SOFT = (408, 503, 480)


def _rank(r: Response) -> tuple[int, int]:
    return _CLASS_ORDER.get(r.status // 100, 4), 1 if r.status in _SOFT else 0


def best_response(responses: list[Response]) -> Response:
    """§16.7 step 6: 6xx wins; else the lowest class: 3xx, then 4xx, then 5xx (as OpenSIPS's
    ``t_pick_branch``). Within a class the first branch wins, except 408/480/503 yield to any other."""
    return min(responses, key=_rank)


def upstream_final(best: Response, finals: Iterable[Response | None]) -> Response:
    """What goes upstream for ``best``: a 503 becomes 500 (§16.7 step 6: the downstream server's
    overload is not ours), and a 401/407 carries every challenge the branches got (§16.7 step 7)."""
    if best.status == 503:
        out = best.copy()
        out.status, out.reason = 500, "Server Internal Error"
        return out
    if best.status not in (401, 407):
        return best
    out = best.copy()
    for final in finals:
        if final is None or final is best or final.status not in (401, 407):
            continue
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for v in final.headers.get_all(name):
                out.headers.add(name, v)
    return out
