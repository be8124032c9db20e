"""Decoding what people post: clips (``media.clip``). Photos are decoded by ``optout_guard.images``."""
