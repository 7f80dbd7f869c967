"""Throwaway ``redis-server`` processes for the tests (see ``polygon_testing.local_redis``)."""

from polygon_testing.local_redis import (
    RedisServerProcess,
    find_redis_server,
    free_port,
    redis_server_available,
)

__all__ = ["RedisServerProcess", "find_redis_server", "free_port", "redis_server_available"]
