"""Where bytes go: a content-addressed store over any fsspec URL. Never imports torch."""

from .backend import DEFAULT_STORE, STORE_ENV, resolve_url
from .store import GcReport, Store, StoreProblem, Unreadable, VerifyProblem

__all__ = ["DEFAULT_STORE", "STORE_ENV", "GcReport", "Store", "StoreProblem", "Unreadable",
           "VerifyProblem", "resolve_url"]
