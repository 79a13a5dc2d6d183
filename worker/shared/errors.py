"""The error hierarchy: permanent errors answer a job with ``failed``; transient ones are retried.

Every error carries a stable ``code`` that clients see in the notification's ``error.code`` and in the
result object. Codes are part of the public contract (docs/contracts.md): never rename one.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the fleet raises on purpose."""

    code: str = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(FleetError):
    """Retrying cannot help: answer the job ``failed`` once and ack it."""

    code = "PERMANENT"


class TransientError(FleetError):
    """May succeed later: retry in process with backoff, then nack for the subscription's retry policy."""

    code = "TRANSIENT"


# --- permanent: the job message itself ---------------------------------------------------------------
class MalformedJob(PermanentError):
    """The message data is not UTF-8 JSON object."""

    code = "MALFORMED_JOB"


class MessageTooLarge(PermanentError):
    """The message data or its attributes exceed the worker's limits."""

    code = "MESSAGE_TOO_LARGE"


class SchemaInvalid(PermanentError):
    """A field is missing, has the wrong type or an invalid value."""

    code = "SCHEMA_INVALID"


class UnsupportedSchemaVersion(PermanentError):
    """The job declares a ``schema_version`` this worker does not speak."""

    code = "UNSUPPORTED_SCHEMA_VERSION"


class InvalidJobId(PermanentError):
    """``job_id`` is not ``[A-Za-z0-9._-]{1,128}`` (or is ``.``/``..``)."""

    code = "INVALID_JOB_ID"


class UnknownAnalysis(PermanentError):
    """``analyses`` names something the model does not offer."""

    code = "UNKNOWN_ANALYSIS"


class UnknownPriority(PermanentError):
    """``priority`` is neither ``interactive`` nor ``batch``."""

    code = "UNKNOWN_PRIORITY"


class DeadlineExceeded(PermanentError):
    """The job's ``deadline`` passed before it could run; answered ``expired``, not ``failed``."""

    code = "DEADLINE_EXCEEDED"


# --- permanent: the input object ---------------------------------------------------------------------
class InputUriInvalid(PermanentError):
    """``input_uri`` is not ``gs://bucket/object``."""

    code = "INPUT_URI_INVALID"


class InputNotAllowed(PermanentError):
    """``input_uri`` names a bucket outside the worker's allowed input buckets."""

    code = "INPUT_NOT_ALLOWED"


class InputNotFound(PermanentError):
    """The input object does not exist."""

    code = "INPUT_NOT_FOUND"


class InputTooLarge(PermanentError):
    """The input object is larger than the worker's byte limit (checked before download)."""

    code = "INPUT_TOO_LARGE"


class ImageUndecodable(PermanentError):
    """The input bytes are empty, truncated, or not an image format the worker reads."""

    code = "IMAGE_UNDECODABLE"


class ImageTooLarge(PermanentError):
    """The image's pixel count exceeds the limit (decompression-bomb guard, checked before decoding)."""

    code = "IMAGE_TOO_LARGE"


class ModelRejected(PermanentError):
    """Triton refused the request as invalid (INVALID_ARGUMENT): retrying the same tensor cannot help."""

    code = "MODEL_REJECTED"


class ModelPreprocessFailed(PermanentError):
    """The model package's ``preprocess`` raised, or returned tensors that do not match its declaration."""

    code = "MODEL_PREPROCESS_FAILED"


class ModelOutputInvalid(PermanentError):
    """The model package's ``postprocess`` raised, or returned non-JSON outputs or missed an analysis."""

    code = "MODEL_OUTPUT_INVALID"


class TensorOutOfBounds(PermanentError):
    """A model package's preprocess made a tensor whose free size is outside the bounds it declares."""

    code = "TENSOR_OUT_OF_BOUNDS"


class TooManyItems(PermanentError):
    """A fan-out package's preprocess returned more items for a page than its ``[fan_out] max_items``."""

    code = "TOO_MANY_ITEMS"


class ProcessingTimeout(PermanentError):
    """The job ran past the worker's maximum processing time."""

    code = "PROCESSING_TIMEOUT"


class DeadLettered(PermanentError):
    """The job exhausted its delivery attempts and was answered by the dead-letter handler."""

    code = "DEAD_LETTERED"


class JobIdConflict(PermanentError):
    """A result for this job_id already exists and answers a different job (another input or options)."""

    code = "JOB_ID_CONFLICT"


class InvalidNamespace(PermanentError):
    """The job's ``namespace`` attribute is not ``[a-z0-9][a-z0-9-]{0,62}``."""

    code = "INVALID_NAMESPACE"


# --- permanent: documents and pages (worker/runtime/documents) ----------------------------------------
class InvalidPages(PermanentError):
    """``pages`` is not a non-empty list of unique page numbers >= 1 (at most MAX_PAGES_PER_JOB)."""

    code = "INVALID_PAGES"


class PageNotFound(PermanentError):
    """``pages`` names a page past the document's page count."""

    code = "PAGE_NOT_FOUND"


class TooManyPages(PermanentError):
    """More pages to analyse than one job may analyse: select pages with ``pages``."""

    code = "TOO_MANY_PAGES"


class MultiPageInput(PermanentError):
    """A schema_version 1 job's input has more than one page (v1 answers from one page only)."""

    code = "MULTI_PAGE_INPUT"


class DocumentTooLarge(PermanentError):
    """The document has too many pages, or its analysed pages would decode to more pixels than allowed."""

    code = "DOCUMENT_TOO_LARGE"


class DocumentEncrypted(PermanentError):
    """The PDF needs a password to open."""

    code = "DOCUMENT_ENCRYPTED"


class DocumentEmpty(PermanentError):
    """The document has no pages."""

    code = "DOCUMENT_EMPTY"


class DocumentUnreadable(PermanentError):
    """The PDF cannot be opened, not even by PDFium's repair of a broken cross-reference table."""

    code = "DOCUMENT_UNREADABLE"


class PageTooLarge(PermanentError):
    """A PDF page is over 14,400 x 14,400 points, or a raster page over the pixel limit."""

    code = "PAGE_TOO_LARGE"


class DocumentTooComplex(PermanentError):
    """A PDF bomb: its streams decompress past the budget, or a page renders past its time budget."""

    code = "DOCUMENT_TOO_COMPLEX"


# --- transient -----------------------------------------------------------------------------------------
class StorageUnavailable(TransientError):
    """GCS failed with a retryable status (429, 5xx) or a connection error."""

    code = "STORAGE_UNAVAILABLE"


class InferenceUnavailable(TransientError):
    """Triton is unreachable, not ready, or timed out."""

    code = "INFERENCE_UNAVAILABLE"


class PubSubUnavailable(TransientError):
    """Pub/Sub failed with a retryable status."""

    code = "PUBSUB_UNAVAILABLE"


# --- client side (raised by worker.client.sdk before or while publishing; never sent to a worker) --------
class ClientInputInvalid(FleetError):
    """A local file, manifest line, URI or option is bad; nothing was published."""

    code = "CLIENT_INPUT_INVALID"

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class PublishIncomplete(FleetError):
    """Publishing failed part-way; the error lists exactly which job ids were and were not published."""

    code = "PUBLISH_INCOMPLETE"

    def __init__(self, message: str, *, published: tuple[str, ...], unpublished: tuple[str, ...]) -> None:
        super().__init__(message)
        self.published = published
        self.unpublished = unpublished


def error_classes(base: type[FleetError] = FleetError) -> tuple[type[FleetError], ...]:
    """Every subclass of ``base``, at any depth, that sets a ``code`` of its own (in definition order)."""
    found: list[type[FleetError]] = []
    for cls in base.__subclasses__():
        if "code" in vars(cls):
            found.append(cls)
        found.extend(c for c in error_classes(cls) if c not in found)
    return tuple(found)


#: Every permanent error of the contract: derived from the classes above, so a new one cannot be missed.
PERMANENT_ERRORS: tuple[type[PermanentError], ...] = tuple(
    cls for cls in error_classes(PermanentError) if issubclass(cls, PermanentError)
)
