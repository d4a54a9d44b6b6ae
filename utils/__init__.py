"""Shared helpers of the DRS Amend job: configuration, connection, exceptions, logging."""
