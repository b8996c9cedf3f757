"""Layer 4: jobs that build on search, no HTTP — refresh, data checks, deploy gates, reports.

Import the modules directly (``lookalike.jobs.refresh``, ``lookalike.search.gates``...): this
package imports nothing at import time so that the server does not load the job machinery.
"""

from __future__ import annotations

__all__: list[str] = []
