"""Errors that reach the user as one line.

Every fault caused by the user's input (a file, a row, a flag, a name) is raised as a
:class:`TransferkitError` whose message names the file or row and what is wrong.  The
command line prints ``error: <message>`` and exits non-zero without a traceback.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """A user-facing fault. ``str(err)`` is a single line."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed, and printable: a file
        # name that is not valid UTF-8 shows its bytes (``caf\\xe9.png``).
        super().__init__(printable(" ".join(str(message).split())))


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of OS names (lone surrogates) written as
    ``\\xNN`` escapes, so that it can be printed on any stream."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class DataError(TransferkitError):
    """Unreadable, malformed or inconsistent input data."""


class ConfigError(TransferkitError):
    """An unknown name, a bad flag value or an impossible combination of settings."""


class BackboneError(TransferkitError):
    """A backbone that cannot be built or loaded (unknown name, no weights, no network)."""


class BundleError(TransferkitError):
    """A saved bundle that is missing, incomplete or does not match its config."""


class CheckpointError(TransferkitError):
    """A run's checkpoint that is damaged, incomplete or does not match the run."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise :class:`KeyboardInterrupt`: the run stops and
    its last checkpoint stays; the command line exits with 143 (128 + SIGTERM)."""


#: what the command line adds to an internal error (exit code 1): where to report it
REPORT_BUG = ("this is a bug in transferkit: please report it on the transferkit issue "
              "tracker with the output of the same command run with --debug")
