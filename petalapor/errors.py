"""The petalapor error hierarchy.

Domain code raises these; ``api.errors`` maps each class to one HTTP status.
"""


class PetalaporError(Exception):
    """Base class of every petalapor error."""


class ConfigError(PetalaporError):
    """A setting, manifest or mapping is wrong."""


class ClusterError(PetalaporError):
    """The embedded PostgreSQL cluster could not be set up, started or stopped."""


class MigrationError(PetalaporError):
    """A schema migration failed; nothing of it was applied."""


class DataError(PetalaporError):
    """Input data is malformed (file, row and field are named in the message)."""


class BoundaryError(DataError):
    """A boundary file cannot be imported."""


class NotFoundError(PetalaporError):
    """The requested object does not exist."""


class InvalidParameterError(PetalaporError):
    """A request parameter is out of range or malformed."""


class ConflictError(PetalaporError):
    """The request conflicts with the stored state (e.g. an illegal status change)."""


class PermissionDeniedError(PetalaporError):
    """The caller's key does not allow this."""


class AuthenticationError(PetalaporError):
    """A key is required, or the key given is unknown or revoked."""
