"""``python -m polygon_sim``: the simulator's command line (also ``polygon-sink simulate``)."""

from polygon_sim.server import main

raise SystemExit(main())
