"""Decoding what people post, the only place untrusted bytes are decoded: photos
(``media.photos``) and clips (``media.clip``)."""
