"""DNS names as Let's Encrypt counts them: registered domains from the Public Suffix List.

Registered domains come from the Public Suffix List, *including its private section*
(``example.github.io`` is its own registered domain), as Let's Encrypt's Boulder does. A leaf
module, because config validation (a wildcard must be under a domain you own) and the budget
both need it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList  # lazy: the PSL loads in ~50 ms

    # The bundled copy: no network. accept_unknown: an unlisted TLD (e.g. "lan") counts as a
    # one-label suffix, which is what the PSL's "*" default rule says.
    return PublicSuffixList(accept_unknown=True)


def registered_domain(name: str) -> str | None:
    """The registered domain of a DNS name (``*.a.example.co.uk`` → ``example.co.uk``).

    None when the name is itself a public suffix (``co.uk``), which no one can get a certificate for.
    """
    n = name.strip().lower().rstrip(".")
    if n.startswith("*."):
        n = n[2:]
    if not n:
        return None
    return _psl().privatesuffix(n)
