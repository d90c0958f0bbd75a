"""Run the seedbed CLI with every Python logger at DEBUG, on stderr.

seedbed has no log-level switch of its own (only ``-v``); the leak tests run it through this file
so that whatever any library logs (httpx, lightkube, asyncio, seedbed's own loggers) is captured
and searched for secrets too. Usage: ``python tests/crash_runner.py -c seedbed.yaml bootstrap ...``
"""

from __future__ import annotations

import logging
import sys

if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from seedbed.cli import main

    main(sys.argv[1:])
