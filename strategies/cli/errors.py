"""The error a `resnas` command raises for a mistake the user can fix; printed as one line, exit code 2."""

USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix; printed as one line."""
