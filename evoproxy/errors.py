"""The exception and warning types that the command line turns into one-line messages."""


class EvoproxyError(Exception):
    """A problem with the user's input or environment, worded so that its message alone says
    what was wrong and how to fix it. The CLI prints it as one line, without a traceback."""


class ParameterError(EvoproxyError):
    """`owner`'s parameter `param` is not `requirement` (a phrase such as "at least 1")."""

    def __init__(self, owner: str, param: str, requirement: str, value: object):
        self.owner, self.param, self.requirement, self.value = owner, param, requirement, value
        super().__init__(self.worded(f"{owner}.{param}"))

    def worded(self, name: str) -> str:
        """The message with the parameter called `name` (a flag, on the command line, where a
        setting left out is None: not a value anyone types)."""
        requirement = self.requirement.removesuffix(" or None") if name.startswith("--") else self.requirement
        return f"{name} must be {requirement}, got {self.value!r}"


def message_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" where it has none): the rest, such as the graph
    node torch.fx appends, would break a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def exception_line(exc: BaseException) -> str:
    """An exception in one line, for a message: its type and its message's first line."""
    line = message_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class EvoproxyWarning(UserWarning):
    """Something the user should know but that does not stop the work (a model run with the
    weights its own function gives it, say); the CLI prints it as one line."""
