"""Errors that describe a user's mistake: the command line prints their message as one line."""


class LabError(Exception):
    """A problem with the user's input (a path, a file, an option), not a bug in the lab."""


class CheckpointError(LabError, ValueError):
    """A directory that is not a checkpoint the lab can read or write; the message names the file or tensor."""
