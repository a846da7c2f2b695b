"""fitscope: activation-function and model-capacity studies in PyTorch."""

__version__ = "0.1.0"


class FitscopeError(Exception):
    """A problem the user can fix (bad config value, missing data): one line, no traceback."""
