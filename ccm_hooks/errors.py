"""Errors a person can act on. Standard library only."""

from __future__ import annotations


class CcmError(Exception):
    """An expected failure: the CLI prints ``ccm-hooks: <message>`` and exits 1, without a traceback.

    The message is one line saying what is wrong and how to fix it.
    """
