"""MLflow tracking: one parent run per sweep, nested runs per (variant, benchmark) and per ensemble.

``LiveTracker`` logs while a sweep runs, from a background thread that never makes the scheduler
wait (an outage is buffered and caught up); ``Tracker`` is the older synchronous wrapper.
"""

from jobs.tracking.client import Tracker
from jobs.tracking.live import LiveTracker
from jobs.tracking.uri import resolve_tracking_uri, ui_command

__all__ = ["LiveTracker", "Tracker", "resolve_tracking_uri", "ui_command"]
