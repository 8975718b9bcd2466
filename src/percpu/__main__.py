"""The ``percpu`` command's entry (its console script and ``python -m percpu``).

A Ctrl-C is made impossible to lose before anything slow is imported. Python turns SIGINT into a
KeyboardInterrupt in whatever Python code runs at that moment, and when that code is a callback the
interpreter calls from C (importlib's module-lock weakref callbacks, run at the end of every import, or
a finalizer), the exception cannot propagate: CPython prints "Exception ignored ... KeyboardInterrupt"
and carries on, so a ``percpu stat`` interrupted while it starts would count on for its whole duration.
The hook below takes such a KeyboardInterrupt, says nothing, and has SIGINT sent to the main thread again
a moment later, from a thread of its own: by then the main thread is out of the callback (and out of the
hook, whose own Python code would swallow a signal handled inside it), so the KeyboardInterrupt surfaces
in ordinary code, or ends a blocking wait, and main() turns it into exit status 130, or a command into
its report. Lost again (another callback), it is sent again. This module imports nothing of percpu's but
the package's root, which imports nothing slow itself.
"""

import _thread
import signal
import sys
import time
from typing import Any

# How long the resending thread waits: the hook has returned long before (a few bytecodes), and a person
# does not notice it.
_RESEND_AFTER = 0.02


def _resend(thread: int) -> None:
    time.sleep(_RESEND_AFTER)
    # Only while Python still handles SIGINT: a command that set SIG_IGN or SIG_DFL meant it.
    if callable(signal.getsignal(signal.SIGINT)):
        signal.pthread_kill(thread, signal.SIGINT)


def _redeliver_lost_interrupts(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        try:
            # This thread is the one the signal's handler ran in, the main thread: it is sent there.
            _thread.start_new_thread(_resend, (_thread.get_ident(),))
            return
        except RuntimeError:  # the interpreter is shutting down: nothing is left to interrupt
            pass
    sys.__unraisablehook__(unraisable)


def main() -> int:
    sys.unraisablehook = _redeliver_lost_interrupts
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
