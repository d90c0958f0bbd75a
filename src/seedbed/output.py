"""The one progress display, in the style of `flux bootstrap`: ► doing, ✔ done, ✗ failed.

Progress goes to stderr so that stdout stays clean for `--output json`. Every line passes
through :mod:`seedbed.scrub` (the one scrubber), which removes any value registered with
:meth:`Output.secret` or :func:`seedbed.scrub.secret` and anything shaped like a credential:
a second line of defence behind "never format a secret into a message".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from . import scrub as _scrub


class Output:
    def __init__(self, *, stream: TextIO | None = None, color: bool | None = None, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self._status: Any = None
        self._console: Any = None
        self._color = color
        self._plain = self._no_terminal()

    # ----------------------------------------------------------------- secrets
    def secret(self, value: str | bytes | None) -> None:
        """Never show this value, whatever line it ends up in (registered with the one scrubber)."""
        _scrub.secret(value)

    def scrub(self, text: str) -> str:
        return _scrub.scrub(text)

    # ----------------------------------------------------------------- lines
    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console  # imported lazily: `seedbed --help` must start fast

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True,
                                    force_terminal=self._color, no_color=self._color is False)
        return self._console

    def _no_terminal(self) -> bool:
        """No terminal to style or animate (a pipe, a file, --no-color): lines are written as they
        are, without rich, whose import is a tenth of a short command's run. rich decides as here:
        --color forces a terminal, --no-color none, FORCE_COLOR and TTY_COMPATIBLE=1 one."""
        if self._color is not None:
            return not self._color
        if os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE") == "1":
            return False
        isatty = getattr(self.stream, "isatty", None)
        return not (isatty and isatty())

    def _print(self, symbol: str, style: str, message: str) -> None:
        if self.quiet and symbol not in ("✗", "!"):
            return
        if self._plain:
            self.stream.write(f"{symbol} {self.scrub(message)}\n")
            self.stream.flush()
            return
        from rich.markup import escape

        mark = f"[{style}]{symbol}[/]" if style else symbol
        self.console.print(f"{mark} {escape(self.scrub(message))}")

    def begin(self, message: str) -> None:
        self._print("►", "bold blue", message)

    def done(self, message: str) -> None:
        self.activity(None)
        self._print("✔", "bold green", message)

    def skip(self, message: str) -> None:
        self.activity(None)
        self._print("◎", "dim", message)

    def fail(self, message: str) -> None:
        self.activity(None)
        self._print("✗", "bold red", message)

    def warn(self, message: str) -> None:
        self._print("!", "bold yellow", message)

    def log(self, message: str) -> None:
        self._print(" ", "", message)

    def debug(self, message: str) -> None:
        if self.verbose:
            self._print("·", "dim", message)

    def activity(self, message: str | None) -> None:
        """What the current step is doing right now, shown as a spinner on a terminal."""
        if message is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        if self.quiet or self._plain or not self.console.is_terminal:
            self.debug(message)
            return
        text = self.scrub(message)
        if self._status is None:
            self._status = self.console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

    def progress(self, what: str) -> Callable[[int, int], None]:
        """A callback for work in counted pieces: shows "what (done/total)" as the activity."""
        def update(done: int, total: int) -> None:
            self.activity(f"{what} ({done}/{total})")
        return update

    def close(self) -> None:
        self.activity(None)


def print_json(data: Any, stream: TextIO | None = None) -> None:
    """Machine-readable output on stdout, every string in it scrubbed like any other output."""
    data = _scrub.scrub_data(json.loads(json.dumps(data, default=str)))
    json.dump(data, stream or sys.stdout, indent=2, sort_keys=False)
    (stream or sys.stdout).write("\n")
