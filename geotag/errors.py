"""One exception type per failure class; the CLI turns each into one line and an exit code.

Exit codes (GUIDE section 5): 0 ok, 1 some files failed, 2 usage or input error.
"""


class GeotagError(Exception):
    """Base class: a failure the user can act on. `exit_code` is what the CLI returns."""

    exit_code = 2


class InputError(GeotagError):
    """A path, file or option the user gave cannot be used (missing, unreadable, wrong columns)."""


class OutputError(GeotagError):
    """The output location cannot be written (missing folder, no permission, is a directory)."""


class SchemaError(InputError):
    """A Parquet/CSV file lacks the columns a command needs."""


class WeightsError(GeotagError):
    """Model weights cannot be found or loaded (offline with no cache, bad file)."""


class ImageError(GeotagError):
    """A problem with one image a model was given (a missing segmentation map, say): the predict engine
    turns it into an error row for that image and goes on with the others."""


class TrackError(InputError):
    """A GPS track or location-history file cannot be used: unknown format, malformed record, a position
    out of range or a time that does not parse. The message is one line naming the file and the record."""
