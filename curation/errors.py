"""User-facing errors: one clear line naming the file, column or field at fault."""


class CurationError(Exception):
    """Bad input or configuration; the CLI prints it as one line and exits non-zero."""
