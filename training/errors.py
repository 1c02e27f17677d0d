"""Errors with messages meant for users: the command line prints them on one line."""


class SSDError(Exception):
    """Base class of the errors this project raises on bad input."""


class ConfigError(SSDError, ValueError):
    """An unknown backbone, prior preset, class list or an inconsistent model description."""


class WeightsError(SSDError):
    """A weights file or checkpoint that is missing, corrupt, foreign or does not fit the model."""
