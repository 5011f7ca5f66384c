"""Where bytes go: a content-addressed store over any fsspec URL. Never imports torch."""

from .backend import DEFAULT_STORE, STORE_ENV, resolve_url
from .store import GcReport, Store, VerifyProblem

__all__ = ["DEFAULT_STORE", "STORE_ENV", "GcReport", "Store", "VerifyProblem", "resolve_url"]
