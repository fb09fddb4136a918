"""Caching on top of :class:`pgcache.Cache`: the five-cache manager, the ``@cached`` decorator
and asyncio single flight. Needs no third-party package."""
