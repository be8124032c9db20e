"""optout-guard: on-premises check of photos against a school district's FERPA opt-out list."""

import os

__version__ = "0.1.0"

# onnxruntime (1.29 and later) starts Microsoft's telemetry when it is first imported: a device id and
# an event queue under ~/.cache/Microsoft/DeveloperTools/, and an uploader. Nothing leaves this
# machine, ever: it is turned off here, before any module of this package can import onnxruntime
# (worker processes inherit the setting). The variable is onnxruntime's own opt-out.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
