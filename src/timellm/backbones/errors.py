"""The error of the backbone layer."""


class BackboneError(RuntimeError):
    """A backbone could not be loaded; the message says what was tried and what to do."""
