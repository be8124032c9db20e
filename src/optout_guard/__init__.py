"""optout-guard: on-premises check of photos against a school district's FERPA opt-out list."""

__version__ = "0.1.0"
