"""The one exception type that the command line turns into a one-line error with exit code 2.

Anything a user can get wrong (a model name, a path, a weights file, a data SPEC) raises
`UserError` with a message that fits on one line; `cli.main` prints it and exits 2.
Everything else is a bug and exits 1.
"""


class UserError(ValueError):
    """Bad usage or bad input: printed as one line, exit code 2."""


class RunFailed(RuntimeError):
    """A run that cannot go on (e.g. the loss keeps being NaN): printed as one line, exit code 1."""


class Interrupted(SystemExit):
    """Training stopped by SIGTERM/SIGINT after writing a checkpoint: exits with 128 + signum.

    A SystemExit, so any caller that does not know it still exits with the conventional code;
    the engine has already printed the one line saying how to resume (`message`)."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message
