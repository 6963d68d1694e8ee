"""The frozen CLIP: which model a user names (:mod:`spec`), loading it (:mod:`load`, :mod:`hub`), its feature
paths (:mod:`backbone`, :mod:`surgery`), its fingerprint and the cache of its image features (:mod:`features`,
:mod:`cache`)."""
