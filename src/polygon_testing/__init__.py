"""Stand-ins for the services around the sink, for the tests, the benchmark and the demo.

- :mod:`polygon_testing.upstash_server`: the Upstash Redis REST API in front of a real Redis,
  with fault switches (:mod:`polygon_testing.upstash_faults`); ``python -m
  polygon_testing.upstash_server``.
- :mod:`polygon_testing.local_redis`: throwaway ``redis-server`` processes on free loopback
  ports (``polygon-sink demo`` starts one when no ``REDIS_URL`` is given).

They may import ``polygon_core`` and ``polygon_adapters``; the product packages never
import them, except ``polygon_runner.demo`` (the local try-out) for ``local_redis``.
"""
