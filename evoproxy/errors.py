"""The exception and warning types that the command line turns into one-line messages."""


class EvoproxyError(Exception):
    """A problem with the user's input or environment, worded so that its message alone says
    what was wrong and how to fix it. The CLI prints it as one line, without a traceback."""


class EvoproxyWarning(UserWarning):
    """Something the user should know but that does not stop the work (a model run with the
    weights its own function gives it, say); the CLI prints it as one line."""
