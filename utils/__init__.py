"""Shared helpers of the DRS Amend job: configuration, connection, exceptions, logging."""

__version__ = "1.1.0"
