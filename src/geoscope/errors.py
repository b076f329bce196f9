"""Errors meant for people: the CLI prints them as one line, with no traceback."""


class GeoscopeError(Exception):
    """A problem the user can fix (bad input, missing weights, ...). The message is one sentence."""


class InputError(GeoscopeError, ValueError):
    """Bad input data: names the file, row or argument that is wrong."""


class WeightsUnavailableError(GeoscopeError, RuntimeError):
    """Model weights are not on this machine and cannot be fetched; says how to provide them."""
