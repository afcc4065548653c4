"""Access to the compiled extension ``summit_fast._C`` with a clear reason when it is absent."""

from __future__ import annotations

try:
    from . import _C as native
    import_error: str | None = None
except ImportError as exc:  # e.g. running from a source tree that was never built
    native = None
    import_error = f"the compiled module summit_fast._C could not be imported ({exc}); install the package with pip"
