"""The two errors a user can cause: a bad configuration and bad input data.

Each carries one line that names the field, file, line or column at fault. The
absl scripts print that line and exit non-zero; nothing else is caught.
"""


class SplitjaxError(ValueError):
  """Base class of the errors that a user's input causes."""


class ConfigError(SplitjaxError):
  """A configuration field is missing, unknown or out of range."""


class DataError(SplitjaxError):
  """A data file is missing, corrupt or does not match its declared schema."""
