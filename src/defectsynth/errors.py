"""Errors a user can meet and fix themselves.

Entry points catch :class:`DefectSynthError` and print its message without a traceback, so each
message must name the file or option at fault and say what was expected.
"""


class DefectSynthError(Exception):
    """Base class for errors caused by user input (data, options, files)."""


class DataError(DefectSynthError):
    """The dataset on disk is missing, malformed or unusable."""


class ConfigError(DefectSynthError, ValueError):
    """A configuration option has a value the project cannot use."""
