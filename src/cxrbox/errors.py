"""The exception hierarchy: every error cxrbox raises on purpose derives from `CxrboxError`.

Library code raises these; only the CLI turns them into exit codes. `listed` shortens a list
of names (patients, files) for a message.
"""

from collections.abc import Sequence


def listed(items: Sequence[str], limit: int = 5) -> str:
    """The first `limit` items joined by commas, then how many more: "a, b, c (+7 more)"."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


class CxrboxError(Exception):
    """Base class of every error cxrbox raises on purpose."""


class InputValueError(CxrboxError, ValueError):
    """An argument has the wrong shape, rank, dtype or non-finite values."""


class BoxFormatError(InputValueError):
    """A box tensor is not [..., 4] or holds NaN/Inf."""


class DicomError(CxrboxError):
    """A file cannot be read as a 2-D single-frame grayscale DICOM image."""


class LabelError(CxrboxError, ValueError):
    """A label CSV is malformed; the message names the file and line."""


class ConfigError(CxrboxError, ValueError):
    """A configuration file or option is invalid."""


class MissingExtraError(ConfigError):
    """An option needs an optional dependency that is not installed; the message names the
    `pip install 'cxrbox[EXTRA]'` that provides it."""


class DataError(CxrboxError):
    """A data set, cache or split is inconsistent (missing images, stale cache, empty split)."""


class TrainingError(CxrboxError):
    """Training cannot continue (base of the run-time failures below)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or Inf; the last good checkpoint is left intact."""


class CollapseError(TrainingError):
    """Predictions collapsed to a constant (raised only with --fail-on-collapse)."""


class CheckpointError(CxrboxError):
    """A checkpoint or run directory cannot be loaded or resumed."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint was written in a format this cxrbox does not read (newer or older)."""

    def __init__(self, path: str, found: object, expected: int, hint: str) -> None:
        self.path, self.found, self.expected = path, found, expected
        super().__init__(
            f"checkpoint {path} has format version {found}; this cxrbox reads version "
            f"{expected}. {hint}"
        )


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, permissions); the previous one is left intact."""


class ModelFileError(CxrboxError):
    """An exported model file (ONNX) is missing, unreadable, foreign or inconsistent."""


class ExportError(CxrboxError):
    """A model cannot be exported or quantized (nothing is left half-written)."""
