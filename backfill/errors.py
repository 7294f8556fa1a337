"""Every expected error of devgrid-backfill, and the exit status each one maps to.

    BackfillError                      base; never a bug, always a one-line message for the user
    +-- UsageError                     bad command line (conflicting options, missing --yes, ...)   -> USAGE
    +-- InputError                     an input file cannot be read or parsed                        -> BAD_INPUT
    |   +-- ReaderError                a reader rejected a file (names file, line, column)
    +-- MappingError                   the YAML mapping is invalid (names file, line, key)           -> BAD_INPUT
    +-- StrictError                    --strict and some rows are invalid                            -> INVALID_ROWS
    +-- CheckpointError                checkpoint unusable or does not match the run                 -> BAD_INPUT
    +-- LedgerError                    the target's ledger is missing, locked, corrupt or foreign     -> BAD_INPUT
    +-- AuthError                      the API refused the key (401), or no key was given            -> AUTH
    +-- UploadStopped                  the upload stopped before the end; resumable                  -> STOPPED
        +-- DiskFull                   the checkpoint's disk is full: a clean stop, nothing lost
    +-- FetchStopped                   `fetch` stopped before the end (network, 5xx, 404); resumable -> STOPPED
    +-- FetchIncomplete                `fetch` finished, but fewer items than the API's totals       -> INCOMPLETE

Anything else that escapes is a bug: the CLI prints it with a traceback only under --traceback.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes of the `backfill` command (documented in README)."""

    OK = 0  # everything planned was previewed / sent
    ERROR = 1  # unexpected internal error (a bug)
    USAGE = 2  # bad command line
    BAD_INPUT = 3  # unreadable input, bad mapping, checkpoint mismatch
    INVALID_ROWS = 4  # --strict and some rows were invalid
    AUTH = 5  # API key missing or refused
    STOPPED = 6  # upload stopped before finishing; rerun to resume
    REJECTED = 7  # upload finished, but the server rejected some events
    INCOMPLETE = 8  # fetch finished and wrote its file, but fewer items than the API's totals
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class BackfillError(Exception):
    """Base of all expected errors. str(error) is the one line shown to the user."""

    exit_status = ExitStatus.ERROR


class UsageError(BackfillError):
    exit_status = ExitStatus.USAGE


class InputError(BackfillError):
    exit_status = ExitStatus.BAD_INPUT


class ReaderError(InputError):
    """A file could not be read. The message names the file and, where known, line and column."""


class MappingError(InputError):
    """The mapping YAML is invalid. The message names the file, line and key."""


class StrictError(BackfillError):
    exit_status = ExitStatus.INVALID_ROWS


class CheckpointError(BackfillError):
    exit_status = ExitStatus.BAD_INPUT


class LedgerError(BackfillError):
    exit_status = ExitStatus.BAD_INPUT


class AuthError(BackfillError):
    exit_status = ExitStatus.AUTH


class UploadStopped(BackfillError):
    exit_status = ExitStatus.STOPPED


class FetchStopped(BackfillError):
    exit_status = ExitStatus.STOPPED


class FetchIncomplete(BackfillError):
    exit_status = ExitStatus.INCOMPLETE


class DiskFull(UploadStopped):
    """The disk holding the checkpoint is full. Every committed change is intact; rerun once there is space."""
