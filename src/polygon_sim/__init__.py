"""A local Polygon/Massive stocks feed: the simulator the tests, the demo and the benchmark use.

Inside, by noun (``docs/simulator.md`` has the options and the wire behaviour):

- :mod:`~polygon_sim.server`: :class:`PolygonSimulator`, the two WebSocket hosts and the
  REST endpoint, connection slots and the ``max_events`` budget; ``main`` is the command line
  (``python -m polygon_sim``, ``polygon-sink simulate``).
- :mod:`~polygon_sim.config`: :class:`SimulatorConfig`, the command-line options, scripts.
- :mod:`~polygon_sim.market`, :mod:`~polygon_sim.tickers`: the market model and the universe.
- :mod:`~polygon_sim.wire`: event records, status frames, encoding.
- :mod:`~polygon_sim.connection`, :mod:`~polygon_sim.streamer`, :mod:`~polygon_sim.host`:
  one connection's state, its protocol and data writer, and what it needs of the server.
- :mod:`~polygon_sim.faults`: the fault switches; :mod:`~polygon_sim.rest`: the tickers
  endpoint; :mod:`~polygon_sim.truth`: what was sent (ground truth for the tests);
  :mod:`~polygon_sim.stamps`: frame numbers and send times for the benchmark.
- Replay of recorded archives (``docs/replay.md``): :mod:`~polygon_sim.replay` (the data
  writer on the server, :class:`Replay`), :mod:`~polygon_sim.replay_source` (the folder and
  S3 readers, each host's merged stream), :mod:`~polygon_sim.replay_layout` (keys read
  back, the range, the reading plan), :mod:`~polygon_sim.replay_lines` (archive lines back
  to wire elements), :mod:`~polygon_sim.replay_pacing` (pure pacing and settle policies),
  :mod:`~polygon_sim.replay_cli` (``polygon-sink replay``).

It may import ``polygon_core`` and ``polygon_adapters``; neither imports it, and
``polygon_runner`` imports it only for its ``simulate``, ``replay`` and ``demo`` commands.
This ``__init__`` imports nothing, so ``import polygon_sim.wire`` stays light.
"""
