"""Errors of the local SageMaker, in two families that never mix.

* :class:`SageMakerError` and its subclasses are API errors: the wire layer
  (``responses.py``) turns them, by type, into AWS's JSON error shape with the
  exact ``__type`` code botocore exposes as ``ClientError.response["Error"]["Code"]``.
* :class:`ToolkitError` and its subclasses mirror the error classes of the
  SageMaker algorithm toolkit used by the built-in XGBoost container.  They are
  raised inside the training child process and end up, formatted like the
  container formats them, in a job's ``FailureReason``; they never reach the wire.
"""

from __future__ import annotations


class SageMakerError(Exception):
    """Raised when an API call must fail with an AWS error response."""

    code = "InternalFailure"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(SageMakerError):
    """Raised when a request is malformed or names something that does not exist."""

    code = "ValidationException"


class ResourceInUseError(SageMakerError):
    """Raised when a job name is already taken in this account and region."""

    code = "ResourceInUse"


class ResourceLimitExceededError(SageMakerError):
    """Raised when a request would take more instances than a service quota allows."""

    code = "ResourceLimitExceeded"


class ToolkitError(Exception):
    """Raised inside the algorithm when training cannot go on (toolkit's ``BaseToolkitError``).

    The message is formatted as the toolkit does: the explicit message, or the
    cause's message, followed by ``" (caused by <CauseClass>)"`` when a cause is given.
    """

    def __init__(self, message: str | None = None, caused_by: BaseException | None = None) -> None:
        if message:
            text = message
        elif caused_by is not None:
            text = str(caused_by)
        else:
            text = "unknown error occurred"
        if caused_by is not None:
            text += f" (caused by {type(caused_by).__name__})"
        super().__init__(text)
        self.message = text
        self.caused_by = caused_by


class UserError(ToolkitError):
    """Raised when the user's configuration or data is wrong (fixable by the user)."""


class AlgorithmError(ToolkitError):
    """Raised when the algorithm itself fails in a way the user could not prevent."""


class PlatformError(ToolkitError):
    """Raised when the environment does not meet the algorithm's needs."""
